"""Smoke test of an installed cyconv: the compiled backend is there, loads and computes.

Run it with the interpreter that has the wheel installed, from a folder that
does not contain the source tree (so that ``import cyconv`` finds the
installed copy)::

    python tools/wheel_smoke_test.py [--require-openmp]

Used by tests/test_packaging.py (sdist -> wheel -> fresh venv) and by
cibuildwheel's ``test-command`` (pyproject.toml).  Exit status 0 when every
check passes; an AssertionError names the one that failed.
"""

import argparse
import os
import sys

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-openmp", action="store_true",
                        help="also require an OpenMP build that really runs two threads")
    args = parser.parse_args(argv)

    import cyconv

    where = os.path.dirname(os.path.abspath(cyconv.__file__))
    backends = cyconv.backends_for("Conv2D")
    assert "cython" in backends, (f"no compiled backend in the cyconv at {where}: Conv2D has "
                                  f"{backends} ({cyconv.list_backends()})")
    from cyconv_ext import _openmp_helpers

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y = cyconv.conv2d(x, w, b, padding=1, backend="cython", algorithm="gemm")
    expected = cyconv.conv2d(x, w, b, padding=1, backend="numpy")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    dx, dw, db = cyconv.conv2d_backward(np.ones_like(y), x, w, padding=1, backend="cython")
    np.testing.assert_allclose(db, np.full(4, 2 * 81, np.float32))
    np.testing.assert_array_equal(cyconv.max_pool2d(x, 2, rounding="floor", backend="cython"),
                                  cyconv.max_pool2d(x, 2, rounding="floor", backend="numpy"))
    openmp = _openmp_helpers.openmp_enabled()
    if args.require_openmp:
        assert openmp, "the compiled backend was built without OpenMP"
        team = _openmp_helpers.openmp_team_size(2)
        assert team == 2, f"an OpenMP region with 2 threads ran on {team}"
    print(f"cyconv {cyconv.__version__} at {where}: compiled backend OK "
          f"(backends {backends}, OpenMP {'on' if openmp else 'off'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
