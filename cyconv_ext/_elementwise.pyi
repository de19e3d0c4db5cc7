import numpy as np
import numpy.typing as npt

def relu_forward(
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    positive: npt.NDArray[np.uint8],
    n_threads: int,
) -> None: ...
def relu_backward(
    dout: npt.NDArray[np.floating],
    positive: npt.NDArray[np.uint8],
    dx: npt.NDArray[np.floating],
    n_threads: int,
) -> None: ...
