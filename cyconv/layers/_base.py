"""The layer protocol every layer follows (built-in or plugin), and the helpers they share.

A layer's class declares what it is (the tags below) and which kernels it
needs; an instance records the backend it runs on.  Choosing that backend is
:mod:`cyconv.backends`' job, not the layer's: this module never looks at the
layer registry, which is built on top of the layers.
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

from .._validation import as_float_array, check_shape
from ..backends import KERNEL_SETS, KernelSets, preference_order

__all__ = ["Layer", "ForwardNotCalledError", "settings_repr", "init_weights", "TAGS"]

#: The tags a layer class declares (all False on :class:`Layer`); ``cyconv.nn``,
#: ``cyconv.testing`` and gradcheck read them instead of testing for classes.
TAGS = ("has_params", "shape_preserving", "is_loss", "stochastic", "batch_coupled")


class ForwardNotCalledError(RuntimeError, AttributeError):
    """``backward()`` was called on a layer before any ``forward()``."""


def _is_default(value, default):
    if value is default:
        return True
    if isinstance(value, np.dtype):
        try:
            return value == np.dtype(default)
        except TypeError:
            return False
    return type(value) is type(default) and value == default


def settings_repr(obj, args=(), essentials=None, options=None, init=None):
    """``Name(arg, key=value, ...)`` in scikit-learn's style.

    ``args`` are shown positionally and ``essentials`` always; ``options``
    only where they differ from the default of ``init``'s signature (the
    class's ``__init__`` unless given).
    """
    init = init or type(obj).__init__
    defaults = {name: param.default for name, param in inspect.signature(init).parameters.items()}
    parts = [repr(a) for a in args]
    parts += [f"{key}={_settings_value(value)}" for key, value in (essentials or {}).items()]
    parts += [f"{key}={_settings_value(value)}" for key, value in (options or {}).items()
              if not _is_default(value, defaults.get(key, inspect.Parameter.empty))]
    return f"{type(obj).__name__}({', '.join(parts)})"


def _settings_value(value):
    return repr(value.name) if isinstance(value, np.dtype) else repr(value)


def seed_only(rng):
    """An int seed is a setting worth showing; a Generator (no readable repr) is not."""
    return rng if isinstance(rng, numbers.Integral) else None


def init_weights(shape, fan_in, weight_init, rng, dtype):
    """Draw weights: "he" (std sqrt(2/fan_in)), "xavier" (sqrt(1/fan_in)) or a fixed std."""
    if isinstance(weight_init, str):
        scales = {"he": 2.0, "xavier": 1.0}
        if weight_init not in scales:
            raise ValueError(f"weight_init must be 'he', 'xavier' or a positive float std, "
                             f"got {weight_init!r}")
        std = np.sqrt(scales[weight_init] / fan_in)
    elif isinstance(weight_init, numbers.Real) and weight_init > 0:
        std = float(weight_init)
    else:
        raise ValueError(f"weight_init must be 'he', 'xavier' or a positive float std, "
                         f"got {weight_init!r}")
    return (std * np.random.default_rng(rng).standard_normal(shape)).astype(dtype)


def promote(x, params):
    """NumPy-style promotion of a float input with the layer's parameters."""
    x = as_float_array(x, "x")
    dtype = np.result_type(x.dtype, *(p.dtype for p in params))
    return x.astype(dtype, copy=False), [p.astype(dtype, copy=False) for p in params]


class Layer:
    """Base class of every layer (built-in or plugin).

    Class attributes a layer may set (``cyconv.testing.check_layer`` reads them):

    name : str
        Set by :func:`cyconv.register_layer`.
    backend : str or None
        On a class: the backend it is registered under (None on a class that
        picks one when instantiated, such as ``cyconv.Conv2D``).  On an
        instance: the backend it runs on.
    kernels_needed : tuple of str
        The kernel-set functions the layer calls (see :mod:`cyconv.backends`);
        empty for a layer written in NumPy.  Any backend whose kernel set has
        them all serves the layer.
    kernels : kernel set or None
        The kernel set an instance runs on (a class registered under one
        backend carries it).
    has_params, shape_preserving, is_loss, stochastic, batch_coupled : bool
        The tags (:data:`TAGS`): the layer has trainable ``params``; its
        output shape equals its input shape; ``forward(x, t)`` returns a
        scalar loss and ``backward(dout=1)`` its gradient; ``forward(x,
        train=True)`` draws random numbers; in training each output depends on
        the whole batch.

    Subclasses keep what ``backward`` needs from ``forward`` in ``_``-prefixed
    attributes and read them with :meth:`_saved`, which raises
    :class:`ForwardNotCalledError` if ``forward`` has not run.
    """

    name = None
    backend = None
    kernels = None
    kernels_needed = ()
    has_params = False
    shape_preserving = False
    is_loss = False
    stochastic = False
    batch_coupled = False

    def __new__(cls, *args, backend=None, **kwargs):
        # A class registered under one backend refuses another.  ``Conv2D(...,
        # backend="plugin")`` builds the class a plugin registered as ("Conv2D",
        # "plugin"): the registry lists those in ``plugin_classes`` (never its own
        # kernel sets, which an instance of ``cls`` runs on directly).
        target = None
        if backend is not None and not cls.picks_backend() and backend != cls.backend:
            # here, not in __init__, so that it holds for plugin classes whose
            # __init__ swallows ``backend`` as well
            raise ValueError(f"{cls.__name__} is the {cls.backend!r} implementation; "
                             f"use cyconv.create_layer({cls.name!r}, backend={backend!r})")
        if cls.picks_backend():
            KERNEL_SETS.before_lookup()  # entry-point plugins may register classes
            plugin_classes = cls.__dict__.get("plugin_classes", {})
            if backend is None and plugin_classes:  # the preference order decides
                for candidate in preference_order():
                    if candidate in plugin_classes or KernelSets.serves(
                            KERNEL_SETS.get(candidate), cls.kernels_needed):
                        backend = candidate
                        break
            target = plugin_classes.get(backend)
        if target is None:
            return super().__new__(cls)
        if not issubclass(target, cls):
            return target(*args, **kwargs)
        return super().__new__(target)

    def __init__(self, *, backend=None):
        self.params = {}
        self.grads = {}
        cls = type(self)
        if cls.picks_backend():
            self.backend, self.kernels = KERNEL_SETS.select(cls.kernels_needed, backend,
                                                            layer=cls.name or cls.__name__)

    @classmethod
    def on_backend(cls, backend, kernels):
        """The class to register as ``(cls.name, backend)``: ``cls`` bound to ``kernels``.

        A class that picks its backend at construction (``kernels_needed`` and
        no ``kernels``) is registered once per kernel set that serves it; the
        registry needs one class object per entry (``get_layer(name,
        backend).backend == backend``).  Such a class adds no code, lives in
        ``cls._bound`` (never in a module's namespace) and its instances pickle
        as ``(cls, backend)``.
        """
        bound = cls.__dict__.get("_bound")
        if bound is None:
            bound = cls._bound = {}
        if backend not in bound:
            bound[backend] = type(cls.__name__, (cls,), {
                "backend": backend, "kernels": kernels, "_bound_from": cls,
                "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                "__doc__": f"{cls.__name__} on the {backend!r} backend.\n\n{cls.__doc__}"})
        return bound[backend]

    @classmethod
    def picks_backend(cls):
        """Whether instances choose their kernel set when made (``cyconv.Conv2D``)."""
        return bool(cls.kernels_needed) and cls.kernels is None

    def __reduce_ex__(self, protocol):
        cls = type(self)
        family = cls.__dict__.get("_bound_from")
        if family is not None:  # not reachable by name: rebuilt from (family, backend)
            return (_bound_instance, (family, cls.backend), self.__getstate__())
        if cls.picks_backend():  # cls.__new__ would choose a class again: skip it
            return (_instance_of, (cls,), self.__getstate__())
        return super().__reduce_ex__(protocol)

    def __getstate__(self):
        state = dict(self.__dict__)
        if "kernels" in state:  # a module does not pickle: restored from the backend name
            del state["kernels"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        cls = type(self)
        if cls.picks_backend():
            self.kernels = KERNEL_SETS.select(cls.kernels_needed, self.backend,
                                              layer=cls.name or cls.__name__)[1]

    def _saved(self, *names):
        """The attributes ``forward`` left for ``backward`` (a tuple when several)."""
        state = self.__dict__
        missing = [n for n in names if n not in state]
        if missing:
            raise ForwardNotCalledError(
                f"{type(self).__name__}.backward() needs the state of a forward() call "
                f"(missing {', '.join(missing)}); call forward(x) first")
        return state[names[0]] if len(names) == 1 else tuple(state[n] for n in names)

    def _adopt_params(self, W, b, *, ndim, out_axis):
        """Hold given weights (by reference when already usable) as params W, b."""
        W = as_float_array(W, "W", ndim=ndim)
        self.params["W"] = W
        if b is not None:
            b = as_float_array(b, "b", ndim=1, dtype=W.dtype)
            check_shape(b, (W.shape[out_axis],), "b")
            self.params["b"] = b
        return W

    def _weights(self):
        """``[W]`` or ``[W, b]``; a layer built lazily says to call build first."""
        if "W" not in self.params:
            raise RuntimeError(f"{self.name} has no weights yet: call build(input_shape) first")
        return [self.params["W"]] + ([self.params["b"]] if "b" in self.params else [])

    @staticmethod
    def _check_dout(dout, shape, dtype=None):
        """Validate an upstream gradient against the shape forward() produced."""
        dout = as_float_array(dout, "dout", dtype=dtype)
        check_shape(dout, shape, "dout")
        return dout

    def build(self, input_shape, *, dtype=np.float64, rng=None):
        """Create parameters for per-sample ``input_shape``; return the output shape."""
        return self.output_shape(input_shape)

    def output_shape(self, input_shape):
        """Per-sample output shape (without the batch axis) for ``input_shape``."""
        return tuple(input_shape)

    def forward(self, x, train=True):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def backward_params(self, dout):
        """Fill ``grads`` like :meth:`backward` without returning the input gradient.

        A network's first layer needs no gradient for its input;
        :class:`cyconv.nn.Sequential` calls this there, and a layer that can
        skip that work (``Conv2D``) overrides it.
        """
        self.backward(dout)

    def __call__(self, *args, **kwargs):
        """``layer(x)`` is ``layer.forward(x)`` (``loss_layer(x, t)`` for a loss)."""
        return self.forward(*args, **kwargs)

    def _repr_settings(self):
        """``(positional, always shown, shown when not the default)`` for the repr."""
        return (), {}, {}

    def __repr__(self):
        args, essentials, options = self._repr_settings()
        return settings_repr(self, args, essentials, dict(options, backend=self.backend))


def _instance_of(cls):
    """Unpickle an instance of ``cls`` without its backend choice (state set by pickle)."""
    return object.__new__(cls)


def _bound_instance(family, backend):
    """Unpickle an instance of ``family.on_backend(backend)`` (state set by pickle)."""
    bound = family.__dict__.get("_bound", {}).get(backend)
    if bound is None:
        bound = family.on_backend(backend, KERNEL_SETS.select(family.kernels_needed, backend,
                                                              layer=family.name)[1])
    return object.__new__(bound)
