"""Optimizers with the textbook's semantics (*Deep Learning from Scratch*, ch. 6).

Every optimizer has ``update(params, grads)``: it changes the arrays in
``params`` **in place** (so layers holding the same arrays see the update) and
keeps its state (velocities, squared-gradient sums...) per key.

=========  ==========================================================================
SGD        ``p -= lr * g``
Momentum   ``v = momentum * v - lr * g; p += v``
Nesterov   ``v = momentum * v - lr * g; p += momentum**2 * v - (1 + momentum) * lr * g``
AdaGrad    ``h += g * g; p -= lr * g / (sqrt(h) + eps)``
RMSprop    ``h = decay * h + (1 - decay) * g * g; p -= lr * g / (sqrt(h) + eps)``
Adam       ``lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``;
           ``m += (1 - beta1) * (g - m); v += (1 - beta2) * (g*g - v)``;
           ``p -= lr_t * m / (sqrt(v) + eps)``
=========  ==========================================================================

``eps`` defaults to the textbook's 1e-7.  PyTorch adds Adam's ``eps`` to the
bias-corrected ``sqrt(v / (1 - beta2**t))`` instead; ``Adam(eps=1e-8,
eps_placement="sqrt_v_hat")`` is PyTorch's ``torch.optim.Adam`` step (up to
rounding).
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from ._param_validation import PARAMS, check
from ._threads import resolve_num_threads
from .backends import BackendError, kernels_for

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "get_optimizer",
]

EPS = 1e-7  # the textbook's


class Optimizer:
    """Base class: state per parameter key, updated in place."""

    def __init__(self, lr):
        self.lr = check("lr", lr)
        self.state = {}

    def _pairs(self, params, grads):
        for key, p in params.items():
            if key not in grads:
                raise KeyError(f"no gradient for parameter {key!r}")
            g = grads[key]
            if np.shape(g) != p.shape:
                raise ValueError(f"gradient {key!r} has shape {np.shape(g)}, "
                                 f"parameter has {p.shape}")
            yield key, p, g

    def _slot(self, key, p, name="v"):
        slots = self.state.setdefault(key, {})
        if name not in slots:
            slots[name] = np.zeros_like(p)
        return slots[name]

    def update(self, params, grads):
        raise NotImplementedError

    def __repr__(self):
        # like scikit-learn's estimators: the constructor's arguments, as set
        names = inspect.signature(type(self).__init__).parameters
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in names
                         if name != "self" and hasattr(self, name))
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent."""

    def __init__(self, lr=0.01):
        super().__init__(lr)

    def update(self, params, grads):
        for _, p, g in self._pairs(params, grads):
            p -= self.lr * g


class Momentum(Optimizer):
    """SGD with momentum."""

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = check("momentum", momentum)

    def update(self, params, grads):
        for key, p, g in self._pairs(params, grads):
            v = self._slot(key, p)
            v *= self.momentum
            v -= self.lr * g
            p += v


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient, in the textbook's formulation."""

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = check("momentum", momentum)

    def update(self, params, grads):
        m = self.momentum
        for key, p, g in self._pairs(params, grads):
            v = self._slot(key, p)
            v *= m
            v -= self.lr * g
            p += m * m * v
            p -= (1 + m) * self.lr * g


class AdaGrad(Optimizer):
    """Per-parameter learning rates from the accumulated squared gradients."""

    def __init__(self, lr=0.01, eps=EPS):
        super().__init__(lr)
        self.eps = check("eps", eps)

    def update(self, params, grads):
        for key, p, g in self._pairs(params, grads):
            h = self._slot(key, p, "h")
            h += g * g
            p -= self.lr * g / (np.sqrt(h) + self.eps)


class RMSprop(Optimizer):
    """AdaGrad with an exponential moving average of the squared gradients."""

    def __init__(self, lr=0.01, decay_rate=0.99, eps=EPS):
        super().__init__(lr)
        self.decay_rate = check("decay_rate", decay_rate)
        self.eps = check("eps", eps)

    def update(self, params, grads):
        d = self.decay_rate
        for key, p, g in self._pairs(params, grads):
            h = self._slot(key, p, "h")
            h *= d
            h += (1 - d) * g * g
            p -= self.lr * g / (np.sqrt(h) + self.eps)


def _fused_adam():
    """The preferred backend's one-pass Adam step, or None where no backend has one.

    Chosen like a layer's kernels (:mod:`cyconv.backends`): the first backend in
    the preference order whose kernel set has ``adam_update``.
    """
    try:
        return kernels_for(("adam_update",), layer="Adam").adam_update
    except BackendError:  # no available backend has it: the NumPy code below
        return None


def _fusable(p, g, m, v):
    arrays = (p, g, m, v)
    return (all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrays)
            and p.flags.writeable and p.dtype in (np.float32, np.float64)
            and all(a.dtype == p.dtype for a in arrays) and not np.may_share_memory(p, g))


class Adam(Optimizer):
    """Adam (Kingma & Ba), with the bias correction folded into the step size.

    ``eps_placement`` says where ``eps`` is added: ``"sqrt_v"`` (the
    default) adds it to ``sqrt(v)``, as the textbook (and Keras) do;
    ``"sqrt_v_hat"`` adds it to the bias-corrected ``sqrt(v / (1 -
    beta2**t))``, as the paper's Algorithm 1 and PyTorch do.  The two differ
    only while ``sqrt(v)`` is as small as ``eps`` (early steps, tiny
    gradients); on the MNIST recipe of ``tools/mnist_vs_torch.py`` they reach
    the same accuracy (docs/tutorial.md).

    Where the compiled extension is built, a contiguous parameter whose
    gradient has its dtype is updated by one fused pass
    (``cyconv_ext/_optim.pyx``) that is bitwise identical to the NumPy code
    below; anything else takes the NumPy code.
    """

    EPS_PLACEMENTS = PARAMS["eps_placement"].options

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=EPS, *, eps_placement="sqrt_v"):
        super().__init__(lr)
        self.beta1 = check("beta1", beta1)
        self.beta2 = check("beta2", beta2)
        self.eps = check("eps", eps)
        self.eps_placement = check("eps_placement", eps_placement)
        self.iter = 0
        self._fused = _fused_adam()

    def update(self, params, grads):
        self.iter += 1
        b1, b2 = self.beta1, self.beta2
        lr_t = self.lr * np.sqrt(1.0 - b2 ** self.iter) / (1.0 - b1 ** self.iter)
        eps = self.eps
        if self.eps_placement == "sqrt_v_hat":  # sqrt(v_hat) + eps == (sqrt(v) + eps_t) / c
            eps *= math.sqrt(1.0 - b2 ** self.iter)  # a Python float: NumPy adds it in T
        threads = None
        for key, p, g in self._pairs(params, grads):
            m = self._slot(key, p, "m")
            v = self._slot(key, p, "v")
            if self._fused is not None and _fusable(p, g, m, v):
                if threads is None:
                    threads = resolve_num_threads(None)
                self._fused(p, g, m, v, lr_t, b1, b2, eps, threads)
                continue
            buf = self._slot(key, p, "buf")  # scratch: no temporaries per step
            np.subtract(g, m, out=buf, casting="same_kind")
            buf *= 1 - b1
            m += buf                                    # m += (1 - b1) * (g - m)
            np.multiply(g, g, out=buf, casting="same_kind")
            buf -= v
            buf *= 1 - b2
            v += buf                                    # v += (1 - b2) * (g*g - v)
            np.sqrt(v, out=buf)
            buf += eps
            np.divide(m, buf, out=buf)
            buf *= lr_t
            p -= buf                                    # p -= lr_t * m / (sqrt(v) + eps)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad,
              "rmsprop": RMSprop, "adam": Adam}


def get_optimizer(optimizer="adam", **kwargs):
    """An optimizer instance from a name (case-insensitive) and keyword arguments.

    An :class:`Optimizer` instance (or anything with ``update``) is returned as is.
    """
    if hasattr(optimizer, "update"):
        if kwargs:
            raise ValueError("optimizer parameters are only accepted with an optimizer name")
        return optimizer
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)} or pass an instance")
    cls = OPTIMIZERS[optimizer.lower()]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad parameters for {cls.__name__}: {exc}") from None
