import numpy as np
import numpy.typing as npt

def adam_update(
    p: npt.NDArray[np.floating],
    g: npt.NDArray[np.floating],
    m: npt.NDArray[np.floating],
    v: npt.NDArray[np.floating],
    lr_t: float,
    beta1: float,
    beta2: float,
    eps: float,
    n_threads: int,
) -> None: ...
