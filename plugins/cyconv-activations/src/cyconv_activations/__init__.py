"""cyconv-activations: LeakyReLU, ELU, GELU, SiLU and Swish for cyconv, in pure NumPy.

An example cyconv plugin.  Installing it adds the layer names below under the
``"numpy"`` backend; cyconv finds them through the ``cyconv.layers`` entry
point declared in ``pyproject.toml``::

    [project.entry-points."cyconv.layers"]
    activations = "cyconv_activations:register"

>>> import cyconv                                   # doctest: +SKIP
>>> cyconv.create_layer("GELU").forward(x)          # doctest: +SKIP

Every layer is element-wise (``shape_preserving = True``), has no
parameters, keeps the input dtype (float32 stays float32) and follows the
textbook protocol: ``forward(x, train=True)`` caches what
``backward(dout)`` needs.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

import cyconv

__version__ = "0.1.0"
__all__ = ["LeakyReLU", "ELU", "GELU", "Swish", "SiLU", "register", "LAYERS"]


def _as_float(value, name):
    """float32/float64 array (ints and bools become float64), like cyconv's layers."""
    value = np.asarray(value)
    if value.dtype.kind in "iub":
        value = value.astype(np.float64)
    if value.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {value.dtype}")
    return value


def _check_dout(dout, cached):
    dout = _as_float(dout, "dout")
    if dout.shape != cached.shape:
        raise ValueError(f"dout must have shape {cached.shape} (the forward output), "
                         f"got {dout.shape}")
    return dout


def _positive_real(value, name, *, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"finite float, got {value!r}")
    return float(value)


def _sigmoid(x):
    """Logistic function without overflow for large ``|x|``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _shapes():
    """Hypothesis strategy of per-sample input shapes, (D,) and (C, H, W)."""
    from hypothesis import strategies as st

    return st.one_of(st.tuples(st.integers(1, 6)),
                     st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)))


def _cases(**options):
    """``check_cases`` for cyconv.testing: (constructor kwargs, input shape) pairs."""
    def cases():
        from hypothesis import strategies as st

        kwargs = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in options.items()})
        return st.tuples(kwargs, _shapes())

    return staticmethod(cases)


class _Activation(cyconv.Layer):
    # How cyconv.testing.check_layer should exercise these layers (spec attributes):
    shape_preserving = True        # output_shape(s) == s
    has_params = False
    check_input_shape = (2, 4, 4)  # per-sample shape of the default case
    check_cases = _cases()         # drawn (kwargs, shape) pairs; subclasses add options
    invalid_params = None          # constructor kwargs that must raise ValueError/TypeError

    def __init__(self, *, backend=None):
        super().__init__()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({args})"

    def _options(self):
        return {}


class LeakyReLU(_Activation):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    The gradient at 0 is ``negative_slope`` (the same side as ReLU's 0).
    """

    name, backend = "LeakyReLU", "numpy"  # also set by registration

    check_cases = _cases(negative_slope=[0.0, 0.01, 0.2, 1.5])
    invalid_params = [{"negative_slope": -0.1}, {"negative_slope": "0.1"},
                      {"negative_slope": float("nan")}]

    def __init__(self, negative_slope=0.01, *, backend=None):
        super().__init__()
        self.negative_slope = _positive_real(negative_slope, "negative_slope", allow_zero=True)

    def _options(self):
        return {"negative_slope": self.negative_slope}

    def forward(self, x, train=True):
        x = _as_float(x, "x")
        self._slope = np.where(x > 0, 1, self.negative_slope).astype(x.dtype)
        return x * self._slope

    def backward(self, dout):
        dout = _check_dout(dout, self._slope)
        return dout * self._slope


class ELU(_Activation):
    """``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise (Clevert et al., 2015).

    Computed with ``expm1`` (accurate near 0, no overflow for large ``x``).
    The gradient is 1 for ``x > 0`` and ``alpha * exp(x)`` otherwise.
    """

    name, backend = "ELU", "numpy"  # also set by registration

    check_cases = _cases(alpha=[0.1, 1.0, 2.5])
    invalid_params = [{"alpha": 0.0}, {"alpha": -1.0}, {"alpha": None}]

    def __init__(self, alpha=1.0, *, backend=None):
        super().__init__()
        self.alpha = _positive_real(alpha, "alpha")

    def _options(self):
        return {"alpha": self.alpha}

    def forward(self, x, train=True):
        x = _as_float(x, "x")
        neg = self.alpha * np.expm1(np.minimum(x, 0))
        self._grad = np.where(x > 0, 1, neg + self.alpha).astype(x.dtype, copy=False)
        return np.where(x > 0, x, neg).astype(x.dtype, copy=False)

    def backward(self, dout):
        dout = _check_dout(dout, self._grad)
        return dout * self._grad


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erf = np.vectorize(math.erf, otypes=[np.float64])


class GELU(_Activation):
    """Gaussian error linear unit ``x * Phi(x)`` (Hendrycks & Gimpel, 2016).

    Parameters
    ----------
    approximate : {"tanh", "none"}
        ``"tanh"`` (default): ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``,
        vectorised NumPy, within about 5e-4 of the exact value (the form used
        by GPT-2/BERT; PyTorch's ``approximate="tanh"``).
        ``"none"``: the exact ``0.5 x (1 + erf(x / sqrt(2)))`` with
        :func:`math.erf` applied element by element (NumPy has no ``erf``; this
        keeps the plugin free of SciPy), computed in float64 and much slower
        on large arrays (PyTorch's default).
    """

    name, backend = "GELU", "numpy"  # also set by registration

    check_cases = _cases(approximate=["tanh", "none"])
    invalid_params = [{"approximate": "erf"}, {"approximate": True}]

    def __init__(self, approximate="tanh", *, backend=None):
        super().__init__()
        if approximate not in ("tanh", "none"):
            raise ValueError(f"approximate must be 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate

    def _options(self):
        return {"approximate": self.approximate}

    def forward(self, x, train=True):
        x = _as_float(x, "x")
        if self.approximate == "tanh":
            inner = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
            t = np.tanh(inner)
            y = 0.5 * x * (1 + t)
            dinner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x ** 2)
            self._grad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner
        else:
            x64 = x.astype(np.float64)
            cdf = 0.5 * (1 + _erf(x64 * _INV_SQRT_2)) if x.size else np.zeros_like(x64)
            pdf = _INV_SQRT_2PI * np.exp(-0.5 * x64 * x64)
            y = x64 * cdf
            self._grad = cdf + x64 * pdf
        self._grad = self._grad.astype(x.dtype, copy=False)
        return y.astype(x.dtype, copy=False)

    def backward(self, dout):
        dout = _check_dout(dout, self._grad)
        return dout * self._grad


class Swish(_Activation):
    """``x * sigmoid(beta * x)`` (Ramachandran et al., 2017); ``beta`` is fixed.

    The gradient is ``s + beta * x * s * (1 - s)`` with ``s = sigmoid(beta x)``.
    """

    name, backend = "Swish", "numpy"  # also set by registration

    check_cases = _cases(beta=[0.5, 1.0, 1.702])
    invalid_params = [{"beta": 0.0}, {"beta": -1.0}, {"beta": "1"}]

    def __init__(self, beta=1.0, *, backend=None):
        super().__init__()
        self.beta = _positive_real(beta, "beta")

    def _options(self):
        return {"beta": self.beta}

    def forward(self, x, train=True):
        x = _as_float(x, "x")
        s = _sigmoid(self.beta * x)
        self._grad = (s + self.beta * x * s * (1 - s)).astype(x.dtype, copy=False)
        return (x * s).astype(x.dtype, copy=False)

    def backward(self, dout):
        dout = _check_dout(dout, self._grad)
        return dout * self._grad


class SiLU(Swish):
    """Sigmoid-weighted linear unit ``x * sigmoid(x)``: :class:`Swish` with ``beta = 1``."""

    name, backend = "SiLU", "numpy"  # also set by registration

    check_cases = _cases()
    invalid_params = [{"beta": 2.0}]  # SiLU has no options

    def __init__(self, *, backend=None):
        super().__init__(1.0)

    def _options(self):
        return {}


#: layer name -> class, everything this plugin registers under backend "numpy".
LAYERS = {"LeakyReLU": LeakyReLU, "ELU": ELU, "GELU": GELU, "Swish": Swish, "SiLU": SiLU}


def register(registry):
    """Entry point (group ``cyconv.layers``): cyconv calls this with its plugin registry."""
    for name, cls in LAYERS.items():
        registry.register(name, "numpy", cls)
