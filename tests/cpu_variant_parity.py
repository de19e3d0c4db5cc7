"""Parity of one CPU kernel variant with the NumPy reference (run by test_cpu_dispatch.py).

Usage: ``CYCONV_CPU_FEATURES=<variant> python tests/cpu_variant_parity.py <variant>``

Checks that the dispatcher runs ``<variant>`` (every module of cython_backend is
that build), then, in float32 and float64, on fixed cases that reach each
kernel's paths (3x3/5x5/1x1/strided/dilated/grouped convolution by GEMM, and by
Winograd where it serves; the 2x2 stride-2 and general pools, borders, ceil
rounding, NaN): convolution forward and backward, max and average pooling
forward and backward and ReLU against the numpy backend, and the fused Adam
step against Adam's NumPy code over three steps.  Tolerances are
test_cython_kernels.py's: float64 to 1e-12 of the result's scale, float32 to
2*L*eps32 times the same operation on absolute values (L the reduction
length); Winograd to the README's stated Frobenius bound; max pooling, ReLU
and Adam exactly.  Each compiled result must also be bitwise the same with 1
and 2 threads, and, for Winograd, with its output forced through the streaming
stores.
Prints one line per group of checks; exits non-zero on the first failure.
"""

from __future__ import annotations

import sys

import numpy as np

import cyconv
from cyconv import optim
from cyconv._cpu import module_name, selected_variant
from cyconv._shapes import resolve_geometry, winograd_serves
from cyconv.backends import cython_backend as cb
from cyconv.backends import numpy_backend as nb
from cyconv_ext._cpu import build_record


def assert_close(actual, expected, bound, reduction_len, dtype, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    err = np.abs(actual - expected)
    if dtype == np.float64:
        tol = 1e-12 * max(np.max(np.abs(expected), initial=0.0), np.max(bound, initial=0.0),
                          1e-300)
    else:
        tol = 2.0 * max(reduction_len, 1) * np.finfo(np.float32).eps * bound + 1e-30
    assert np.all(err <= tol), f"{what}: max error {err.max()} exceeds the bound"


def assert_thread_invariant(one_thread, two_threads, what):
    """The same results computed with 1 and with 2 threads are bitwise equal."""
    for a, b in zip(one_thread, two_threads, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{what}: 1 vs 2 threads")


def check_dispatch(variant):
    assert selected_variant() == variant, (selected_variant(), variant)
    held = [k for k in build_record()["modules"] if hasattr(cb, k)]
    assert {"_conv", "_elementwise", "_optim", "_pool"} <= set(held), held
    for kernel in held:
        assert getattr(cb, kernel).__name__ == module_name(kernel, variant), kernel
    assert cyconv.get_layer("Conv2D", "cython").kernels is cb


def assert_stream_invariant(x, w, b, dy, geom, groups, results, what):
    """Winograd outputs forced through the streaming stores are bitwise the plain ones."""
    plain_rule = cb._stream_winograd_output
    cb._stream_winograd_output = lambda out_shape, dtype: True
    try:
        streamed = (cb.conv2d_forward(x, w, b, geom, groups, 2, algorithm="winograd"),
                    *cb.conv2d_backward(dy, x, w, geom, groups, 2, algorithm="winograd"))
    finally:
        cb._stream_winograd_output = plain_rule
    for a, c in zip(results, streamed, strict=True):
        np.testing.assert_array_equal(a, c, err_msg=f"{what}: streamed vs plain stores")


CONV_CASES = [
    # x shape, w shape, stride, padding, dilation, groups, rounding
    ((2, 3, 9, 8), (4, 3, 3, 3), 1, 1, 1, 1, "floor"),
    ((4, 32, 10, 10), (16, 32, 3, 3), 1, 1, 1, 1, "exact"),
    ((2, 16, 12, 11), (8, 16, 5, 5), 1, 2, 1, 1, "exact"),
    ((3, 4, 11, 10), (6, 2, 3, 3), 2, ((1, 0), (2, 1)), 2, 2, "ceil"),
    ((2, 4, 7, 7), (8, 1, 3, 3), 1, 0, 1, 4, "exact"),
    ((2, 24, 6, 6), (10, 24, 1, 1), 1, 0, 1, 1, "exact"),
    ((2, 8, 13, 13), (6, 8, 3, 3), 2, 1, 1, 1, "floor"),
]


def assert_frobenius(actual, expected, bound, c, what):
    """Winograd's stated bound (README): ||actual - expected||_F <= c * ||bound||_F."""
    err = np.linalg.norm((np.asarray(actual, np.float64) - expected).ravel())
    assert err <= c * np.linalg.norm(np.asarray(bound).ravel()), f"{what}: error {err}"


def check_conv(dtype, rng):
    """Every case by GEMM, and by Winograd where it serves the geometry."""
    for xs, ws, s, p, d, groups, rounding in CONV_CASES:
        geom = resolve_geometry(xs[2:], ws[2:], stride=s, padding=p, dilation=d,
                                rounding=rounding)
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        b = rng.standard_normal(ws[0]).astype(dtype)
        ax, aw, ab = (np.abs(a).astype(np.float64) for a in (x, w, b))
        y_ref = nb.conv2d_forward(x, w, b, geom, groups)
        y_bound = nb.conv2d_forward(ax, aw, ab, geom, groups)
        dy = rng.standard_normal(y_ref.shape).astype(dtype)
        refs = nb.conv2d_backward(dy, x, w, geom, groups)
        bounds = nb.conv2d_backward(np.abs(dy).astype(np.float64), ax, aw, geom, groups)
        n_pos = y_ref.shape[0] * y_ref.shape[2] * y_ref.shape[3]
        lengths = (ws[1] * ws[2] * ws[3], (ws[0] // groups) * ws[2] * ws[3], n_pos, n_pos)
        for algorithm in ("gemm", "winograd") if winograd_serves(geom) else ("gemm",):
            what = f"conv {algorithm} {xs} {ws}"
            y = cb.conv2d_forward(x, w, b, geom, groups, 2, algorithm=algorithm)
            grads = cb.conv2d_backward(dy, x, w, geom, groups, 2, algorithm=algorithm)
            results = (y, *grads)
            for name, got, ref, bound, n in zip(("y", "dx", "dw", "db"), results,
                                                (y_ref, *refs), (y_bound, *bounds), lengths):
                if algorithm == "gemm" or name == "db":
                    assert_close(got, ref, bound, n, dtype, f"{what} {name}")
                else:
                    c = 1e-12 if dtype == np.float64 else (1e-4 if name == "dw" else 2e-5)
                    assert_frobenius(got, ref, bound, c, f"{what} {name}")
            assert_thread_invariant(
                (cb.conv2d_forward(x, w, b, geom, groups, 1, algorithm=algorithm),
                 *cb.conv2d_backward(dy, x, w, geom, groups, 1, algorithm=algorithm)),
                results, what)
            if algorithm == "winograd":
                assert_stream_invariant(x, w, b, dy, geom, groups, results, what)


POOL_CASES = [
    # x shape, kernel, stride, padding, rounding
    ((2, 3, 8, 10), 2, 2, 0, "floor"),      # the 2x2 stride-2 fast paths
    ((2, 5, 9, 7), 3, 2, 1, "ceil"),        # borders, clipped windows
    ((1, 4, 17, 19), (3, 2), (1, 2), (1, 0), "floor"),
]


def all_pools(x, dy, geom, n_threads):
    return (*cb.max_pool2d_forward(x, geom, n_threads),
            cb.avg_pool2d_forward(x, geom, False, None, n_threads),
            cb.avg_pool2d_backward(dy, x.shape, geom, True, None, n_threads))


def check_pool(dtype, rng):
    for xs, k, s, p, rounding in POOL_CASES:
        geom = resolve_geometry(xs[2:], k, stride=s, padding=p, rounding=rounding,
                                layer="pool2d", max_pool_padding=True)
        x = rng.standard_normal(xs).astype(dtype)
        x.flat[::7] = x.flat[1::7]     # ties: the first maximum must win
        x[0, 0, 1, 1] = np.nan         # NaN propagates
        y, idx = cb.max_pool2d_forward(x, geom, 2)
        y_ref, idx_ref = nb.max_pool2d_forward(x, geom)
        np.testing.assert_array_equal(y, y_ref, err_msg=f"max-pool y {xs}")
        np.testing.assert_array_equal(idx, idx_ref, err_msg=f"max-pool indices {xs}")
        dy = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(cb.max_pool2d_backward(dy, idx, xs, 2),
                                      nb.max_pool2d_backward(dy, idx_ref, xs),
                                      err_msg=f"max-pool dx {xs}")
        x = rng.standard_normal(xs).astype(dtype)
        area = geom.kernel_h * geom.kernel_w
        for include_pad in (True, False):
            args = (geom, include_pad, None)
            y = cb.avg_pool2d_forward(x, *args, n_threads=2)
            assert_close(y, nb.avg_pool2d_forward(x, *args),
                         nb.avg_pool2d_forward(np.abs(x).astype(np.float64), *args), area,
                         dtype, f"avg-pool y {xs}")
            assert_close(cb.avg_pool2d_backward(dy, xs, *args, n_threads=2),
                         nb.avg_pool2d_backward(dy, xs, *args),
                         nb.avg_pool2d_backward(np.abs(dy).astype(np.float64), xs, *args),
                         area, dtype, f"avg-pool dx {xs}")
        assert_thread_invariant(all_pools(x, dy, geom, 1), all_pools(x, dy, geom, 2),
                                f"pool {xs}")


def check_relu(dtype, rng):
    x = rng.standard_normal(1000).astype(dtype)
    x[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-40]
    dout = rng.standard_normal(1000).astype(dtype)
    dout[6:9] = [np.inf, np.nan, -np.inf]
    y, positive = cb.relu_forward(x, 2)
    y_ref, positive_ref = nb.relu_forward(x)
    np.testing.assert_array_equal(y, y_ref)
    assert np.array_equal(np.signbit(y), np.signbit(y_ref)), "ReLU: -0.0 must become +0.0"
    np.testing.assert_array_equal(positive, positive_ref)
    np.testing.assert_array_equal(cb.relu_backward(dout, positive, 2),
                                  nb.relu_backward(dout, positive_ref))
    assert_thread_invariant((*cb.relu_forward(x, 1), cb.relu_backward(dout, positive, 1)),
                            (y, positive, cb.relu_backward(dout, positive, 2)), "relu")


def check_adam(dtype, rng):
    start = {"w": rng.standard_normal((37, 29)).astype(dtype),
             "b": rng.standard_normal(1001).astype(dtype)}
    grads = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in start.items()}
             for _ in range(3)]
    results = []
    for fused in (True, False):
        params = {k: v.copy() for k, v in start.items()}
        opt = optim.Adam(lr=0.01)
        if fused:
            assert opt._fused is not None, "the compiled Adam step is missing"
        else:
            opt._fused = None
        for g in grads:
            opt.update(params, g)
        results.append(params)
    for key in start:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=f"Adam {key}")


def main(variant):
    check_dispatch(variant)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for check in (check_conv, check_pool, check_relu, check_adam):
            check(dtype, rng)
            print(f"{variant} {np.dtype(dtype).name} {check.__name__[6:]}: ok")


if __name__ == "__main__":
    main(sys.argv[1])
