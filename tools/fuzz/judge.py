"""Judging one outcome: unchanged inputs, the right error, a result equal to the reference."""

from __future__ import annotations

import traceback

import numpy as np

#: Outcomes that fail a case.
FAILURES = ("wrong_result", "mutated_input", "accepted_invalid", "rejected_valid",
            "bad_error_type", "bad_message", "crash", "hang", "harness_error")


def snapshot(values):
    """Copies of the array arguments (and their writeable flags) to compare afterwards."""
    snap = []
    for v in values:
        if isinstance(v, np.ndarray) and (v.flags.writeable or v.nbytes < (64 << 20)):
            snap.append((v, np.array(v, copy=True), v.flags.writeable))
    return snap


def mutated_input(snap):
    """What changed in a snapshot's arrays, or None."""
    for v, copy, writeable in snap:
        if v.flags.writeable != writeable:
            return "writeable flag changed"
        if v.dtype.kind == "O":
            same = all(a is b or a == b or (a != a and b != b)
                       for a, b in zip(v.ravel().tolist(), copy.ravel().tolist()))
        else:
            same = np.array_equal(v, copy, equal_nan=v.dtype.kind in "fc")
        if not same:
            return f"input of shape {v.shape} dtype {v.dtype} was modified"
    return None


def _tolerance(dtype):
    return 2e-4 if np.dtype(dtype) == np.float32 else 1e-9


def compare(actual, expected, mag, what="result"):
    """None if equal (NaN pattern, inf pattern, finite values within tolerance)."""
    if isinstance(expected, tuple):
        if not isinstance(actual, tuple) or len(actual) != len(expected):
            return f"{what}: expected a {len(expected)}-tuple, got {type(actual).__name__}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            msg = compare(a, e, mag[i] if isinstance(mag, (list, tuple)) else mag,
                          f"{what}[{i}]")
            if msg:
                return msg
        return None
    if not isinstance(actual, np.ndarray):
        return f"{what}: expected an ndarray, got {type(actual).__name__}"
    if actual.shape != expected.shape:
        return f"{what}: shape {actual.shape} != reference {expected.shape}"
    if actual.dtype != expected.dtype:
        return f"{what}: dtype {actual.dtype} != reference {expected.dtype}"
    if actual.dtype.kind in "iu":
        if not np.array_equal(actual, expected):
            bad = np.argwhere(actual != expected)[:3].tolist()
            return f"{what}: integer values differ at {bad}"
        return None
    a_nan, e_nan = np.isnan(actual), np.isnan(expected)
    if not np.array_equal(a_nan, e_nan):
        bad = np.argwhere(a_nan != e_nan)[:3].tolist()
        return f"{what}: NaN pattern differs at {bad}"
    a_inf, e_inf = np.isinf(actual), np.isinf(expected)
    if not np.array_equal(a_inf, e_inf) or not np.array_equal(actual[a_inf], expected[e_inf]):
        bad = np.argwhere((a_inf != e_inf) | (a_inf & (actual != expected)))[:3].tolist()
        return f"{what}: +-inf pattern differs at {bad}"
    fin = ~(a_nan | a_inf)
    tol = _tolerance(actual.dtype) * (np.abs(expected[fin]) + mag)
    diff = np.abs(actual[fin].astype(np.float64) - expected[fin].astype(np.float64))
    if diff.size and np.any(diff > tol):
        i = int(np.argmax(diff - tol))
        return (f"{what}: max abs difference {diff.max():.3g} exceeds tolerance "
                f"(at flat finite index {i}: {actual[fin][i]!r} vs reference "
                f"{expected[fin][i]!r})")
    return None


def finite_max(a):
    """Largest finite magnitude (0 for none): the scale of a tolerance."""
    a = np.asarray(a, dtype=np.float64)
    f = a[np.isfinite(a)]
    return float(np.abs(f).max()) if f.size else 0.0


def _message_ok(exc, expect):
    msg = str(exc)
    if expect.get("unnamed_ok") and type(exc).__name__ == "MemoryError":
        return True
    names = expect.get("names") or []
    low = msg.lower()
    return not names or any(n.lower() in low for n in names)


def _allowed(exc, expect):
    """The exception's class or one of its bases is an expected type."""
    return any(t.__name__ in expect.get("types", ()) for t in type(exc).__mro__)


def judge_exception(exc, expect, tb):
    """The outcome of a call that raised ``exc``."""
    name = type(exc).__name__
    if expect["kind"] == "ok":
        return {"status": "rejected_valid", "exc_type": name, "message": str(exc)[:500],
                "traceback": tb}
    if not _allowed(exc, expect):
        return {"status": "bad_error_type", "exc_type": name, "message": str(exc)[:500],
                "traceback": tb}
    if not _message_ok(exc, expect):
        return {"status": "bad_message", "exc_type": name, "message": str(exc)[:500]}
    return {"status": "error", "exc_type": name, "message": str(exc)[:200]}


def accepted_invalid(expect):
    """The outcome of a call that returned although ``expect`` says it must raise."""
    return {"status": "accepted_invalid",
            "message": f"expected {expect['types']} naming {expect['names']}"}


def call_and_judge(call, inputs, expect):
    """Run ``call()`` and judge what does not need its result.

    Returns
    -------
    verdict, out
        ``verdict`` is the outcome when the inputs changed, the call raised or
        it returned although ``expect`` says it must raise; else None, with
        ``out`` the call's return value.
    """
    snap = snapshot(inputs)
    try:
        out = call()
    except Exception as exc:  # noqa: BLE001 - judged below
        mutated = mutated_input(snap)
        if mutated:
            return {"status": "mutated_input", "message": mutated}, None
        return judge_exception(exc, expect, traceback.format_exc()[-3000:]), None
    mutated = mutated_input(snap)
    if mutated:
        return {"status": "mutated_input", "message": mutated}, None
    if expect["kind"] == "raise":
        return accepted_invalid(expect), None
    return None, out
