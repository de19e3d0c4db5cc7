"""cyconv: CNN layers on NumPy arrays, with compiled Cython/OpenMP conv, pooling and ReLU.

Quick start::

    import numpy as np, cyconv
    x = np.random.rand(8, 1, 28, 28)
    w = np.random.rand(30, 1, 5, 5)
    y = cyconv.conv2d(x, w)                 # (8, 30, 24, 24), compiled backend
    cyconv.conv_output_size((28, 28), 5)    # (24, 24): OH = (H + 2P - FH)/S + 1
"""

from __future__ import annotations

__version__ = "0.1.0"

# First of all: loads the OpenMP runtime with cyconv's wait policy and leaves
# the environment as the user's (cyconv/_openmp_runtime.py).
from . import (  # _openmp_runtime first: the import loads the runtime
    _openmp_runtime,  # noqa: F401
    _registry,
)
from ._config import show_config, show_versions
from ._plugins import PluginLoadWarning, load_plugins
from ._plugins import install as _install_plugins
from ._registry import (
    BackendError,
    BackendFallbackWarning,
    LayerNotFoundError,
    backends_for,
    create_layer,
    get_layer,
    list_backends,
    list_layers,
    register_layer,
    use_backend,
)
from ._shapes import (
    Geometry,
    ShapeError,
    conv_output_size,
    normalize_padding,
    pool_output_size,
    resolve_geometry,
)
from ._threads import (
    ThreadCountWarning,
    ThreadsAfterForkWarning,
    get_num_threads,
    set_num_threads,
)
from .backends import SerialBuildWarning
from .functional import (
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from .layers import (
    Affine,
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dropout,
    Flatten,
    ForwardNotCalledError,
    Layer,
    MaxPool2D,
    ReLU,
    Sigmoid,
    SoftmaxWithLoss,
)

# Entry-point plugins (group "cyconv.layers") load lazily, on the first lookup.
_install_plugins(_registry.REGISTRY)


def get_include():
    """Directory to add to a Cython build's include path to ``cimport`` cyconv's
    public ``.pxd`` files (``from cyconv_ext._fused cimport floating_t``).

    Like :func:`numpy.get_include`; it is the folder that holds the
    ``cyconv_ext`` package.
    """
    import os

    import cyconv_ext

    return os.path.dirname(os.path.dirname(os.path.abspath(cyconv_ext.__file__)))


__all__ = [
    "Affine", "AvgPool2D", "BackendError", "BackendFallbackWarning", "BatchNorm", "Conv2D",
    "Dropout", "Flatten", "ForwardNotCalledError", "Geometry", "Layer", "LayerNotFoundError", "MaxPool2D",
    "PluginLoadWarning", "ReLU", "SerialBuildWarning",
    "ShapeError", "Sigmoid", "SoftmaxWithLoss", "ThreadCountWarning", "ThreadsAfterForkWarning",
    "avg_pool2d",
    "avg_pool2d_backward",
    "backends_for", "conv2d", "conv2d_backward", "conv_output_size", "create_layer",
    "get_include", "get_layer", "get_num_threads", "list_backends", "list_layers", "load_plugins",
    "max_pool2d",
    "max_pool2d_backward", "normalize_padding", "pool_output_size", "register_layer",
    "resolve_geometry", "set_num_threads", "show_config", "show_versions", "use_backend",
]


_SUBMODULES = ("compat", "datasets", "nn", "optim", "plots", "testing", "training")


def __getattr__(attr):
    # Submodules load on first use (``cyconv.nn.Sequential``), so ``import
    # cyconv`` stays light: no Hypothesis, matplotlib or scikit-learn.
    if attr in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{attr}")
    raise AttributeError(f"module 'cyconv' has no attribute {attr!r}")
