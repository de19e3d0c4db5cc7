"""Numerical gradient checks (central differences, float64).

:func:`gradcheck` compares analytic gradients with numeric ones for any
function of arrays; :func:`layer_gradcheck` does it for a cyconv layer's
input and every parameter.

The scalar being differentiated is ``L = sum(dout * f(*inputs))`` for a
random ``dout`` (standard normal, from ``seed``), so one backward call gives
the gradient of every input.  Numeric derivatives use
``sum(dout * (f(x + eps e) - f(x - eps e))) / (2 eps)``: differencing the
outputs before the weighted sum keeps the rounding error small.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GradcheckResult", "gradcheck", "layer_gradcheck"]

_MODES = ("auto", "full", "directional")


@dataclass
class _Record:
    """The worst entry of one input."""

    ratio: float  # error / tolerance (> 1 fails)
    abs_error: float
    rel_error: float
    input: int
    index: object
    numeric: float
    analytic: float
    n_bad: int
    n_total: int
    max_abs: float
    max_rel: float


@dataclass
class GradcheckResult:
    """Outcome of a passed :func:`gradcheck`.

    Attributes
    ----------
    mode : {"full", "directional"}
        The mode that ran (``"auto"`` resolved).
    n_checked : int
        Entries (full) or directional derivatives (directional) compared.
    max_abs_error, max_rel_error : float
        Largest absolute and relative difference between numeric and analytic
        values.
    worst : dict
        The entry closest to the tolerance: ``input`` (index), ``name``,
        ``index`` (element index, or ``"direction k"``), ``numeric``,
        ``analytic``, ``abs_error``, ``rel_error``.
    """

    mode: str
    n_checked: int
    max_abs_error: float
    max_rel_error: float
    worst: dict = field(default_factory=dict)

    def __str__(self):
        return (f"gradcheck passed ({self.mode}, {self.n_checked} values): max abs error "
                f"{self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}")


def _as_float64(value, name):
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"gradcheck: {name} has dtype {arr.dtype}; gradcheck differentiates "
                        f"float arrays only (it computes in float64). Convert it with "
                        f".astype(np.float64), or leave non-differentiable arguments out of "
                        f"`inputs` (close over them in f and backward).")
    return np.array(arr, dtype=np.float64, copy=True, order="C")


def _check_output(y, what):
    arr = np.asarray(y)
    if arr.dtype != np.float64:
        raise TypeError(f"gradcheck: {what} returned dtype {arr.dtype} for float64 inputs; "
                        f"numeric differences need the computation in float64 (a float32 "
                        f"result makes eps-sized differences meaningless)")
    return arr


def _describe(i, names):
    return f"input {i} ({names[i]})" if names[i] != f"input {i}" else f"input {i}"


def gradcheck(f, inputs, backward, *, mode="auto", eps=1e-6, rtol=1e-5, atol=1e-8,
              n_directions=3, seed=0, max_full_size=1500, names=None):
    """Compare analytic gradients with central differences, in float64.

    Parameters
    ----------
    f : callable
        ``f(*inputs) -> ndarray or float``; must compute in float64 for
        float64 inputs and must not modify its inputs.
    inputs : sequence of array_like
        Float arrays to differentiate with respect to (copied and cast to
        float64; non-float inputs are refused with a TypeError).
    backward : callable
        ``backward(dout, *inputs) -> sequence of gradients``, one per input,
        each of that input's shape: the gradient of ``sum(dout * f(*inputs))``.
        ``dout`` has the shape of ``f``'s output (a float for scalar output).
    mode : {"auto", "full", "directional"}
        "full": a central difference for every element of every input.
        "directional": ``n_directions`` random directions ``v`` per input,
        comparing ``(L(x + eps v) - L(x - eps v)) / (2 eps)`` with
        ``<grad, v>``.  "auto": "full" when the inputs hold at most
        ``max_full_size`` elements in total, else "directional".
    eps : float
        Finite-difference step.
    rtol, atol : float
        An entry passes when ``|analytic - numeric| <= atol + rtol * |numeric|``;
        in directional mode the relative term scales with
        ``max(|numeric|, sum(|grad * v|))``.
    n_directions : int
        Random directions per input in directional mode.
    seed : int
        Seeds ``dout`` and the directions.
    max_full_size : int
        Threshold of the "auto" mode.
    names : sequence of str, optional
        Names of the inputs for the failure report.

    Returns
    -------
    GradcheckResult

    Raises
    ------
    AssertionError
        When an entry is out of tolerance; the message reports the worst
        entry: input index/name, element index (or direction), numeric and
        analytic values, absolute and relative error.
    TypeError, ValueError
        Non-float inputs, a non-float64 result, or gradients of the wrong
        number or shape.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.testing import gradcheck
    >>> f = lambda x: np.sin(x)
    >>> backward = lambda dout, x: [dout * np.cos(x)]
    >>> gradcheck(f, [np.linspace(0, 1, 5)], backward).mode
    'full'
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not (eps > 0):
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if isinstance(inputs, np.ndarray) or not hasattr(inputs, "__len__"):
        raise TypeError("inputs must be a sequence of arrays (wrap a single array in a list)")
    names = [f"input {i}" for i in range(len(inputs))] if names is None else list(names)
    if len(names) != len(inputs):
        raise ValueError(f"names has {len(names)} entries for {len(inputs)} inputs")
    xs = [_as_float64(a, _describe(i, names)) for i, a in enumerate(inputs)]
    if not xs:
        raise ValueError("gradcheck needs at least one input")
    rng = np.random.default_rng(seed)

    y0_raw = f(*xs)
    y0 = _check_output(y0_raw, "f")
    dout = rng.standard_normal(y0.shape)
    scalar_out = y0.ndim == 0
    dout_arg = float(dout) if scalar_out else dout
    grads = backward(dout_arg, *[x.copy() for x in xs])
    if grads is None or isinstance(grads, np.ndarray) or len(grads) != len(xs):
        got = "None" if grads is None else (
            "an array" if isinstance(grads, np.ndarray) else f"{len(grads)} gradients")
        raise ValueError(f"backward must return a sequence of {len(xs)} gradients (one per "
                         f"input), got {got}")
    analytic = []
    for i, (g, x) in enumerate(zip(grads, xs)):
        if g is None:
            raise ValueError(f"backward returned None as the gradient of {_describe(i, names)}")
        g = _check_output(g, f"backward (gradient of {_describe(i, names)})")
        if g.shape != x.shape:
            raise ValueError(f"the gradient of {_describe(i, names)} has shape {g.shape}, the "
                             f"input has shape {x.shape}")
        analytic.append(g)

    def loss_diff(yp, ym):
        yp, ym = _check_output(yp, "f"), _check_output(ym, "f")
        if yp.shape != y0.shape or ym.shape != y0.shape:
            raise ValueError(f"f's output shape changed under perturbation: {y0.shape} -> "
                             f"{yp.shape}/{ym.shape}")
        # equal entries (including equal infinities, e.g. a max-pooling window
        # that holds only padding) contribute nothing
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(yp == ym, 0.0, yp - ym)
            return float(np.sum(dout * diff)) / (2 * eps)

    total = sum(x.size for x in xs)
    resolved = mode if mode != "auto" else ("full" if total <= max_full_size else "directional")
    records = []
    if resolved == "full":
        for i, x in enumerate(xs):
            flat = x.reshape(-1)
            numeric = np.empty(x.size)
            for j in range(x.size):
                old = flat[j]
                flat[j] = old + eps
                yp = np.array(f(*xs), copy=True)
                flat[j] = old - eps
                ym = np.array(f(*xs), copy=True)
                flat[j] = old
                numeric[j] = loss_diff(yp, ym)
            ana = analytic[i].reshape(-1)
            if not x.size:
                continue
            err = np.abs(ana - numeric)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = err / (atol + rtol * np.abs(numeric))
                rel = err / np.maximum(np.maximum(np.abs(numeric), np.abs(ana)), 1e-300)
            ratio = np.where(np.isnan(ratio), np.inf, ratio)  # NaN never passes
            j = int(np.argmax(ratio))
            records.append(_Record(ratio=float(ratio[j]), abs_error=float(err[j]),
                                   rel_error=float(rel[j]), input=i,
                                   index=tuple(int(q) for q in np.unravel_index(j, x.shape)),
                                   numeric=float(numeric[j]), analytic=float(ana[j]),
                                   n_bad=int(np.count_nonzero(ratio > 1)), n_total=x.size,
                                   max_abs=float(np.max(err)), max_rel=float(np.max(rel))))
        n_checked = total
    else:
        if n_directions < 1:
            raise ValueError(f"n_directions must be >= 1, got {n_directions!r}")
        for i, x in enumerate(xs):
            if not x.size:
                continue
            orig = x.copy()
            rows = []
            for k in range(n_directions):
                v = rng.standard_normal(x.shape)
                np.add(orig, eps * v, out=x)
                yp = np.array(f(*xs), copy=True)
                np.subtract(orig, eps * v, out=x)
                ym = np.array(f(*xs), copy=True)
                x[...] = orig
                num = loss_diff(yp, ym)
                ana = float(np.sum(analytic[i] * v))
                scale = max(abs(num), float(np.sum(np.abs(analytic[i] * v))))
                err = abs(num - ana)
                ratio = err / (atol + rtol * scale) if not math.isnan(err) else math.inf
                rel = err / max(abs(num), abs(ana), 1e-300) if not math.isnan(err) else math.inf
                rows.append((ratio, err, rel, k, num, ana))
            r = max(rows, key=lambda r: r[0])
            records.append(_Record(ratio=r[0], abs_error=r[1], rel_error=r[2], input=i,
                                   index=f"direction {r[3]}", numeric=r[4], analytic=r[5],
                                   n_bad=sum(q[0] > 1 for q in rows), n_total=n_directions,
                                   max_abs=max(q[1] for q in rows),
                                   max_rel=max(q[2] for q in rows)))
        n_checked = n_directions * sum(1 for x in xs if x.size)

    if not records:
        return GradcheckResult(resolved, 0, 0.0, 0.0, {})
    worst = max(records, key=lambda r: r.ratio)
    info = dict(input=worst.input, name=names[worst.input], index=worst.index,
                numeric=worst.numeric, analytic=worst.analytic, abs_error=worst.abs_error,
                rel_error=worst.rel_error)
    if worst.ratio > 1:
        unit = "entries" if resolved == "full" else "directions"
        summary = "; ".join(f"{_describe(r.input, names)}: {r.n_bad} of {r.n_total} {unit} off"
                            for r in records if r.n_bad)
        where = (f"at index {worst.index}" if resolved == "full"
                 else f"along random {worst.index}")
        raise AssertionError(
            f"gradcheck failed ({resolved} mode, eps={eps:g}, rtol={rtol:g}, atol={atol:g}): "
            f"worst entry in {_describe(worst.input, names)} {where}: "
            f"numeric={worst.numeric:.10g}, analytic={worst.analytic:.10g}, "
            f"abs error={worst.abs_error:.3g}, rel error={worst.rel_error:.3g}. [{summary}]")
    return GradcheckResult(resolved, n_checked, max(r.max_abs for r in records),
                           max(r.max_rel for r in records), info)


def spec_flag(layer, attr):
    """A boolean tag of the layer, class or instance (:data:`cyconv.layers.TAGS`:
    ``SoftmaxWithLoss.is_loss``, ``Dropout.stochastic``, ``BatchNorm.batch_coupled``,
    ...), as built-in layers and plugins declare it; False if it lacks it.

    Parameters
    ----------
    layer : cyconv.Layer or Layer subclass
    attr : {"is_loss", "stochastic", "batch_coupled"}

    Returns
    -------
    bool
    """
    return bool(getattr(layer, attr, False))


def layer_gradcheck(layer, x, *, t=None, train=True, mode="auto", eps=1e-6, rtol=1e-5,
                    atol=1e-8, n_directions=3, seed=0, max_full_size=1500):
    """Check a layer's input gradient and every parameter gradient numerically.

    The layer itself is never modified: evaluations run on a deep copy of
    it (parameters cast to float64), perturbing the copy's ``params`` arrays
    in place and restoring them.  For stochastic layers (``stochastic = True``,
    e.g. ``Dropout``) every evaluation runs on a fresh copy of one snapshot,
    so the layer's own random generator replays the same mask; NumPy's
    global random state is also reset before each evaluation (and restored
    at the end).  Such layers can therefore be checked with ``train=True``.

    Parameters
    ----------
    layer : cyconv.Layer
        A layer instance.  Layers with ``has_params`` and empty ``params``
        are built (on the copy) for ``x.shape[1:]`` in float64.
    x : ndarray
        Input batch (float; cast to float64).
    t : ndarray, optional
        Targets for loss layers (``is_loss``: ``forward(x, t, train=...)``
        returns a scalar loss); defaults to random integer labels in
        ``[0, x.shape[1])``.
    train : bool
        Passed to ``forward``.
    mode, eps, rtol, atol, n_directions, seed, max_full_size
        As in :func:`gradcheck`.

    Returns
    -------
    GradcheckResult

    Raises
    ------
    AssertionError
        A gradient is wrong (the report names ``x`` or ``params['key']``).

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> from cyconv.testing import layer_gradcheck
    >>> layer = cyconv.Affine(3, rng=0)
    >>> _ = layer.build((4,))
    >>> layer_gradcheck(layer, np.random.default_rng(0).standard_normal((2, 4))).mode
    'full'
    """
    x = _as_float64(x, "x")
    is_loss = spec_flag(layer, "is_loss")
    snapshot = copy.deepcopy(layer)
    if getattr(snapshot, "has_params", False) and not snapshot.params:
        snapshot.build(tuple(x.shape[1:]), dtype=np.float64, rng=seed)
    keys = list(snapshot.params)
    for k in keys:
        snapshot.params[k] = np.array(snapshot.params[k], dtype=np.float64, copy=True)
    if is_loss and t is None:
        t = np.random.default_rng(seed).integers(0, x.shape[1], size=x.shape[0])
    global_state = np.random.get_state()

    stochastic = spec_flag(layer, "stochastic")
    work = copy.deepcopy(snapshot)

    def fresh(param_values):
        # stochastic layers: a new copy each time replays the layer's own generator
        inst = copy.deepcopy(snapshot) if stochastic else work
        for k, v in zip(keys, param_values):
            inst.params[k][...] = v
        np.random.set_state(global_state)
        return inst

    def run_forward(inst, xv):
        return inst.forward(xv, t, train=train) if is_loss else inst.forward(xv, train=train)

    def f(xv, *ps):
        return run_forward(fresh(ps), xv)

    def backward(dout, xv, *ps):
        inst = fresh(ps)
        run_forward(inst, xv)
        dx = inst.backward(dout)
        missing = [k for k in keys if k not in inst.grads]
        if missing:
            raise ValueError(f"{type(layer).__name__}.backward did not set grads for "
                             f"{missing}")
        return [dx] + [inst.grads[k] for k in keys]

    try:
        return gradcheck(f, [x] + [snapshot.params[k] for k in keys], backward, mode=mode,
                         eps=eps, rtol=rtol, atol=atol, n_directions=n_directions, seed=seed,
                         max_full_size=max_full_size,
                         names=["x"] + [f"params[{k!r}]" for k in keys])
    finally:
        np.random.set_state(global_state)
