from typing import Any

import numpy as np
import numpy.typing as npt

WORKSPACE_CAP: int
DW_SLOT_CAP: int
MAX_SLOTS: int
MIN_WORK_ITEMS: int
LANE_PANEL: dict[int, int]
LANES_RESULT_CAP: int

def conv2d_forward(
    x: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating],
    bias: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    geom: Any,
    groups: int,
    has_bias: bool,
    xlo: npt.NDArray[np.intp],
    xhi: npt.NDArray[np.intp],
    n_threads: int,
) -> None: ...
def conv2d_forward_lanes(
    x: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating],
    bias: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    geom: Any,
    groups: int,
    has_bias: bool,
    n_threads: int,
) -> None: ...
def conv2d_backward(
    dy: npt.NDArray[np.floating],
    x: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating],
    dx: npt.NDArray[np.floating],
    dw: npt.NDArray[np.floating],
    db: npt.NDArray[np.floating],
    geom: Any,
    groups: int,
    xlo: npt.NDArray[np.intp],
    xhi: npt.NDArray[np.intp],
    n_threads: int,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> None: ...
def bias_grad(
    dy: npt.NDArray[np.floating], db: npt.NDArray[np.floating], n_threads: int
) -> None: ...
