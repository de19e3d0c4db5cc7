from typing import Any

import numpy as np
import numpy.typing as npt

def max_pool2d_forward(
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    indices: npt.NDArray[np.int64],
    geom: Any,
    windows: Any,
    n_threads: int,
) -> None: ...
def max_pool2d_backward(
    dy: npt.NDArray[np.floating],
    indices: npt.NDArray[np.int64],
    dx: npt.NDArray[np.floating],
    n_threads: int,
) -> None: ...
def avg_pool2d_forward(
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    divisor: npt.NDArray[np.floating],
    geom: Any,
    windows: Any,
    n_threads: int,
) -> None: ...
def avg_pool2d_backward(
    dy: npt.NDArray[np.floating],
    dx: npt.NDArray[np.floating],
    divisor: npt.NDArray[np.floating],
    geom: Any,
    windows: Any,
    n_threads: int,
) -> None: ...
