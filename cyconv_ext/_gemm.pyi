import numpy as np
import numpy.typing as npt

def variant() -> str: ...
def blocking(dtype: npt.DTypeLike) -> dict[str, int]: ...
def min_workspace_bytes(dtype: npt.DTypeLike) -> int: ...
def workspace_bytes(dtype: npt.DTypeLike, m: int, n: int, k: int) -> int: ...
def gemm(
    a: npt.NDArray[np.floating],
    b: npt.NDArray[np.floating],
    c: npt.NDArray[np.floating],
    trans_a: bool = False,
    trans_b: bool = False,
    beta: float = 0.0,
    *,
    repeat: int = 1,
    workspace_bytes: int | None = None,
) -> int: ...
def blas_gemm(
    a: npt.NDArray[np.floating],
    b: npt.NDArray[np.floating],
    c: npt.NDArray[np.floating],
    trans_a: bool = False,
    trans_b: bool = False,
    beta: float = 0.0,
    *,
    repeat: int = 1,
) -> int: ...
