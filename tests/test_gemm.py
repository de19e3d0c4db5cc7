"""cyconv's own GEMM (cyconv_ext/include/cyconv_gemm.h via cyconv_ext._gemm).

Accuracy bound.  Each element of C = op(A) op(B) + beta C is a sum of k
products plus beta*C; in the kernel every product passes through at most
k + 1 roundings (its multiply or fused multiply-add, the adds of its k
block, the merge of the blocks into C), so recursive-summation analysis
(Higham, gamma_n with n = k + 2 and unit roundoff u = eps/2) bounds the
error by (k + 2) * u * B with B = |op(A)| |op(B)| + |beta C|; the tests
allow (k + 2) * eps * B, twice that, against a float64 reference (float32)
or a float64 reference whose own error is far below the float64 bound.

Determinism.  The header promises that each element of C is computed by the
same operations whatever m, n, the element's position and the workspace:
the tests compare, bitwise, blocks of rows / columns computed alone with the
same elements of the whole product, and the product on the smallest
workspace with the default one.  Every ISA variant of the header is built
and run by the C program tests/gemm_variants.c (skipped, with the reason,
where the compiler or the CPU lacks the instruction set).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

from cyconv._cpu import import_kernels, selected_variant

# the build of the kernel variant this process runs (CYCONV_CPU_FEATURES chooses)
(G,) = import_kernels("_gemm")

DTYPES = (np.float32, np.float64)
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def matrix(rng, rows, cols, dtype, pad=3):
    """A column-major rows x cols matrix whose leading dimension is rows + pad
    (a slice of a bigger Fortran-ordered array)."""
    big = np.asfortranarray(rng.standard_normal((rows + pad, cols + 1)).astype(dtype))
    return big[:rows, :cols]


def operands(rng, trans_a, trans_b, m, n, k, dtype):
    a = matrix(rng, k, m, dtype) if trans_a else matrix(rng, m, k, dtype)
    b = matrix(rng, n, k, dtype) if trans_b else matrix(rng, k, n, dtype)
    c = matrix(rng, m, n, dtype)
    return a, b, c


def op(x, trans):
    x = x.astype(np.float64)
    return x.T if trans else x


def assert_within_bound(got, a, b, c0, trans_a, trans_b, beta, dtype):
    """|got - ref| <= (k + 2) * eps * (|op(a)| |op(b)| + |beta c0|) elementwise."""
    k = op(a, trans_a).shape[1]
    ref = op(a, trans_a) @ op(b, trans_b)
    mag = np.abs(op(a, trans_a)) @ np.abs(op(b, trans_b))
    if beta != 0:
        ref = ref + beta * c0.astype(np.float64)
        mag = mag + np.abs(beta * c0.astype(np.float64))
    tol = (k + 2) * np.finfo(dtype).eps * mag
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= tol), f"max err {err.max()}, worst err/bound {np.max(err / (tol + 1e-300))}"


def bits(x):
    return np.ascontiguousarray(x).view(np.uint32 if x.dtype == np.float32 else np.uint64)


def sizes(dtype):
    """(m, n, k) around the block sizes: 1, MR-1, MR+1, NR+-1, KC+-1, several
    k blocks, past MC and NC, zero sizes, and the LeNet shape."""
    bl = G.blocking(dtype)
    mr, nr, kc, mc, nc = bl["mr"], bl["nr"], bl["kc"], bl["mc"], bl["nc"]
    return [(1, 1, 1), (mr - 1, nr - 1, kc - 1), (mr + 1, nr + 1, kc + 1), (mr, nr, kc),
            (2 * mr + 3, 3 * nr - 1, 2 * kc + 5), (mc + 1, 7, 19), (5, nc + 1, 3),
            (mr // 2, nr, 9), (mr // 2 + 1, 2, 5), (100, 16, 150),
            (0, 4, 3), (4, 0, 3), (4, 3, 0), (0, 0, 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_matches_float64_reference(dtype, trans_a, trans_b, beta):
    rng = np.random.default_rng(0)
    for m, n, k in sizes(dtype):
        a, b, c = operands(rng, trans_a, trans_b, m, n, k, dtype)
        if beta == 0:
            c[...] = np.nan          # beta = 0 must not read C
        c0 = c.copy()
        outside = c.base.copy()
        assert G.gemm(a, b, c, trans_a, trans_b, beta) == 0
        assert_within_bound(c, a, b, c0, trans_a, trans_b, beta, dtype)
        # nothing outside the m x n matrix (padding rows, the spare column) moved
        mask = np.ones(c.base.shape, bool)
        mask[:m, :n] = False
        np.testing.assert_array_equal(c.base[mask], outside[mask])


@pytest.mark.parametrize("dtype", DTYPES)
def test_other_betas_scale_c(dtype):
    rng = np.random.default_rng(1)
    for beta in (0.5, -2.0, 3.0):
        for m, n, k in [(17, 7, 33), (3, 2, 0)]:
            a, b, c = operands(rng, False, True, m, n, k, dtype)
            c0 = c.copy()
            G.gemm(a, b, c, False, True, beta)
            assert_within_bound(c, a, b, c0, False, True, beta, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_row_and_column_blocks_are_bitwise_identical(dtype, trans_a, trans_b, beta):
    """The first rows (or a block of rows starting anywhere) of a product
    computed alone equal bitwise the same rows of the whole product; the same
    for columns.  k spans two k blocks, m and n several tiles and an edge."""
    bl = G.blocking(dtype)
    mr, nr, kc = bl["mr"], bl["nr"], bl["kc"]
    m, n, k = 3 * mr + 5, 3 * nr + 2, kc + 7
    rng = np.random.default_rng(2)
    a, b, c0 = operands(rng, trans_a, trans_b, m, n, k, dtype)
    whole = c0.copy(order="F")
    G.gemm(a, b, whole, trans_a, trans_b, beta)
    row_blocks = [(0, 1), (0, mr - 1), (0, mr), (0, mr + 1), (0, 2 * mr + 3), (5, mr + 3),
                  (mr + 1, 2 * mr), (m - 1, 1), (3, m - 3)]
    for start, rows in row_blocks:
        part = c0[start:start + rows].copy(order="F")
        sub_a = a[:, start:start + rows] if trans_a else a[start:start + rows]
        G.gemm(sub_a, b, part, trans_a, trans_b, beta)
        np.testing.assert_array_equal(bits(part), bits(whole[start:start + rows]),
                                      err_msg=f"rows {start}:{start + rows}")
    col_blocks = [(0, 1), (0, nr - 1), (0, nr), (0, nr + 1), (2, nr + 3), (n - 1, 1)]
    for start, cols in col_blocks:
        part = c0[:, start:start + cols].copy(order="F")
        sub_b = b[start:start + cols] if trans_b else b[:, start:start + cols]
        G.gemm(a, sub_b, part, trans_a, trans_b, beta)
        np.testing.assert_array_equal(bits(part), bits(whole[:, start:start + cols]),
                                      err_msg=f"columns {start}:{start + cols}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_workspace_size_does_not_change_bits(dtype, trans_a, trans_b):
    """The smallest workspace (one micro-panel each: the malloc-failure path's
    blocking), sizes in between and the default give the same bits, also past
    MC rows and NC columns."""
    bl = G.blocking(dtype)
    rng = np.random.default_rng(3)
    smallest = G.min_workspace_bytes(dtype)
    for m, n, k in [(bl["mc"] + 9, 2 * bl["nr"] + 1, bl["kc"] + 3), (7, bl["nc"] + 5, 4)]:
        a, b, c0 = operands(rng, trans_a, trans_b, m, n, k, dtype)
        default = c0.copy(order="F")
        G.gemm(a, b, default, trans_a, trans_b, 1.0)
        full = G.workspace_bytes(dtype, m, n, k)
        for size in (smallest, smallest + 4099, (smallest + full) // 2, full, 2 * full):
            c = c0.copy(order="F")
            assert G.gemm(a, b, c, trans_a, trans_b, 1.0, workspace_bytes=size) == 0
            np.testing.assert_array_equal(bits(c), bits(default), err_msg=f"{size} bytes")


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_values_stay_in_their_row_and_column(dtype):
    """An Inf in A's last row (inside a zero-padded edge panel) and a NaN in
    B's last column reach only their own row and column of C: the padding's
    0 * Inf never lands in a real element."""
    bl = G.blocking(dtype)
    m, n, k = bl["mr"] + 1, bl["nr"] + 1, 11
    rng = np.random.default_rng(4)
    a, b, c = operands(rng, False, False, m, n, k, dtype)
    a[m - 1, 3] = np.inf
    b[5, n - 1] = np.nan
    G.gemm(a, b, c, False, False, 0.0)
    assert np.isfinite(c[:m - 1, :n - 1]).all()
    assert not np.isfinite(c[m - 1]).any()
    assert np.isnan(c[:, n - 1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_products_give_positive_zero(dtype):
    """Sums start at +0 (as in the reference BLAS loop): exact -0 products sum
    to +0, whatever the tile position."""
    a = np.full((19, 5), -1.0, dtype, order="F")
    b = np.zeros((5, 7), dtype, order="F")
    c = np.full((19, 7), -0.0, dtype, order="F")
    G.gemm(a, b, c, False, False, 0.0)
    assert (c == 0).all() and not np.signbit(c).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_equals_per_matrix(dtype):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 7, 3)).astype(dtype).transpose(0, 2, 1)   # (4, 3, 7) col-major
    b = rng.standard_normal((4, 5, 7)).astype(dtype).transpose(0, 2, 1)   # (4, 7, 5)
    c = np.empty((4, 5, 3), dtype).transpose(0, 2, 1)                     # (4, 3, 5)
    G.gemm(a, b, c)
    for t in range(4):
        single = np.empty((3, 5), dtype, order="F")
        G.gemm(np.asfortranarray(a[t]), np.asfortranarray(b[t]), single)
        np.testing.assert_array_equal(bits(c[t]), bits(single))


def test_blas_gemm_matches_the_reference():
    rng = np.random.default_rng(6)
    a, b, c = operands(rng, True, False, 9, 4, 6, np.float64)
    c0 = c.copy()
    G.blas_gemm(a, b, c, True, False, 1.0)
    assert_within_bound(c, a, b, c0, True, False, 1.0, np.float64)


def test_helpers():
    # each dispatch variant compiled the header's kernel for its instruction set
    expected = {"avx512": {"avx512"}, "avx2": {"avx2"},
                "baseline": {"generic-vector", "generic-scalar"}}
    assert G.variant() in expected[selected_variant()]
    for dtype in DTYPES:
        bl = G.blocking(dtype)
        assert bl["mc"] % bl["mr"] == 0 and bl["nc"] % bl["nr"] == 0
        assert G.workspace_bytes(dtype, 1000, 1000, 1000) >= G.min_workspace_bytes(dtype)
    with pytest.raises(TypeError, match="float32 or float64"):
        G.blocking(np.int32)


def f_array(shape, dtype=np.float64):
    return np.zeros(shape, dtype, order="F")


@pytest.mark.parametrize("args,kwargs,error,match", [
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 5), np.float32)), {}, TypeError,
     "one dtype"),
    ((f_array((3, 4), np.int64), f_array((4, 5)), f_array((3, 5))), {}, TypeError,
     "float32 or float64"),
    ((f_array((3, 4)).astype(">f8"), f_array((4, 5)), f_array((3, 5))), {}, TypeError,
     "native byte order"),
    (([[1.0]], f_array((1, 1)), f_array((1, 1))), {}, TypeError, "numpy.ndarray"),
    ((f_array((3,)), f_array((3, 5)), f_array((1, 5))), {}, ValueError, "2-D"),
    ((f_array((3, 4)), f_array((5, 5)), f_array((3, 5))), {}, ValueError, "do not match"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 6))), {}, ValueError, "do not match"),
    ((np.zeros((3, 4)), f_array((4, 5)), f_array((3, 5))), {}, ValueError, "column-major"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((6, 10))[::2, ::2]), {}, ValueError,
     "column-major"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 5))[:, ::-1]), {}, ValueError,
     "column stride"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 5)), 1, False), {}, TypeError,
     "trans_a must be a bool"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 5)), False, False, np.nan), {},
     ValueError, "beta"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 5))), {"repeat": 0}, ValueError,
     "repeat"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 5))), {"workspace_bytes": 0},
     ValueError, "workspace_bytes"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 5))), {"workspace_bytes": 100},
     ValueError, "too small for this product"),
    ((f_array((2, 3, 4)), f_array((3, 4, 5)), f_array((2, 3, 5))), {}, ValueError,
     "batch size"),
    ((f_array((3, 4)), f_array((4, 5)), f_array((3, 4, 5))), {}, ValueError, "same ndim"),
])
def test_bad_input_is_refused(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        G.gemm(*args, **kwargs)


def test_read_only_or_overlapping_output_is_refused():
    a, b = f_array((3, 4)), f_array((4, 3))
    c = f_array((3, 3))
    c.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        G.gemm(a, b, c)
    square = f_array((4, 4))
    with pytest.raises(ValueError, match="overlap"):
        G.gemm(square, square, square)
    batch = np.broadcast_to(f_array((1, 3, 3)), (2, 3, 3))
    with pytest.raises(ValueError, match="writable|overlap"):
        G.gemm(f_array((2, 3, 4)), f_array((2, 4, 3)), batch)


# -- every ISA variant: the standalone C program ----------------------------------

def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


LEVELS = {
    "x86-64": set(),
    "x86-64-v3": {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"},
    "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}
# (build flags, the variant the program must report)
VARIANTS = {
    "scalar": (["-march=x86-64", "-DCYCONV_GEMM_SCALAR"], "generic-scalar"),
    "x86-64": (["-march=x86-64"], "generic-vector"),
    "x86-64-v3": (["-march=x86-64-v3"], "avx2"),
    "x86-64-v4": (["-march=x86-64-v4"], "avx512"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_in_c(variant, tmp_path):
    """Build tests/gemm_variants.c for each variant (a build failure fails)
    and run it where the CPU has the variant's instructions: the plain C path
    of non-GNU compilers (forced by CYCONV_GEMM_SCALAR), GCC's SSE2 vectors,
    AVX2+FMA, AVX-512."""
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        pytest.skip("the variants are x86-64 ISA levels")
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        pytest.skip(f"no C compiler ({cc[0]})")
    flags, expected = VARIANTS[variant]
    level = flags[0].split("=")[1]
    probe = subprocess.run(cc + [flags[0], "-x", "c", "-c", "-o", os.devnull, "-"],
                           input=b"int x;\n", capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{cc[0]} does not know {flags[0]}")
    exe = tmp_path / f"gemm_{variant}"
    build = subprocess.run(
        cc + ["-O2", "-ffp-contract=off", *flags, "-I",
              os.path.join(ROOT, "cyconv_ext", "include"),
              os.path.join(ROOT, "tests", "gemm_variants.c"), "-o", str(exe), "-lm"],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("cannot read the CPU flags (/proc/cpuinfo) to know what runs here")
    missing = LEVELS["x86-64-v3"] - flags if level == "x86-64-v4" else set()
    missing |= LEVELS[level] - flags
    if missing:
        pytest.skip(f"built; this CPU lacks {sorted(missing)} to run the {level} variant")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == [expected, "ok"]
