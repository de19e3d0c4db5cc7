import numpy as np
import numpy.typing as npt

def weight_transform(
    w: npt.NDArray[np.floating], u: npt.NDArray[np.floating], m: int, n_threads: int
) -> bool: ...
def forward(
    x: npt.NDArray[np.floating],
    u: npt.NDArray[np.floating],
    bias: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    pad_top: int,
    pad_left: int,
    m: int,
    has_bias: bool,
    tile_block: int,
    n_threads: int,
    stream: bool = ...,
) -> bool: ...
def weight_grad(
    dy: npt.NDArray[np.floating],
    x: npt.NDArray[np.floating],
    dw: npt.NDArray[np.floating],
    db: npt.NDArray[np.floating],
    pad_top: int,
    pad_left: int,
    m: int,
    groups: int,
    tile_block: int,
    n_slots: int,
    n_threads: int,
    need_db: bool,
) -> bool: ...
