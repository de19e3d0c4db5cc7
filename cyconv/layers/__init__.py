"""Layer classes: one small class per layer, forward and backward side by side.

Every layer follows the textbook's protocol (*Deep Learning from Scratch*,
ch. 5-7): ``forward(x, train=True)`` caches what ``backward(dout)`` needs;
parameters live in ``params`` and their gradients in ``grads`` (dicts of
arrays, same keys).  Layers with parameters can be built lazily: give the
output size only and call ``build(input_shape)`` (``cyconv.nn.Sequential``
does that), or pass the arrays (``W=..., b=...``) directly.

``Conv2D``, ``MaxPool2D``, ``AvgPool2D`` and ``ReLU`` run on a backend's
kernels: an instance picks them when it is made (``backend=None`` follows the
preference order, ``cython`` first), so ``Conv2D(30, 5)`` is the fast one and
``Conv2D(30, 5, backend="numpy")`` the reference.

One module per family (``conv``, ``pooling``, ``dense``, ``activations``,
``normalization``, ``loss``) on the base in ``_base``; every class is
importable from here, which is also where it pickles from.
"""

from __future__ import annotations

from ._base import TAGS, ForwardNotCalledError, Layer, init_weights, settings_repr
from .activations import ReLU, Sigmoid
from .conv import Conv2D
from .dense import Affine, Flatten
from .loss import SoftmaxWithLoss
from .normalization import BatchNorm, Dropout
from .pooling import AvgPool2D, MaxPool2D

__all__ = [
    "Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "Affine", "ReLU", "Sigmoid",
    "SoftmaxWithLoss", "Dropout", "BatchNorm", "Flatten", "COMPILED_LAYER_NAMES",
    "ForwardNotCalledError", "BUILTIN_LAYERS", "TAGS", "init_weights", "settings_repr",
]

#: Every built-in layer class.
BUILTIN_LAYERS = (Conv2D, MaxPool2D, AvgPool2D, ReLU, Affine, Sigmoid, SoftmaxWithLoss,
                  Dropout, BatchNorm, Flatten)

#: The layers with compiled kernels (the others are written in NumPy).
COMPILED_LAYER_NAMES = ("Conv2D", "MaxPool2D", "AvgPool2D")

# The public module is the classes' home: reprs, docs and pickles name
# ``cyconv.layers.Conv2D`` whichever family module defines it.
for _cls in BUILTIN_LAYERS + (Layer, ForwardNotCalledError):
    _cls.__module__ = __name__
del _cls
