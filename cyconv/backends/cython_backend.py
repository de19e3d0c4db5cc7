"""The compiled kernels (Cython + OpenMP), behind the kernel contract of :mod:`cyconv.backends`.

Each function allocates its outputs and hands them to a kernel in
:mod:`cyconv_ext._conv`, :mod:`cyconv_ext._pool` or :mod:`cyconv_ext._elementwise`
(ReLU); ``adam_update`` serves :class:`cyconv.optim.Adam` from
:mod:`cyconv_ext._optim` (see the "Design:" comment
at the top of each for loop order, parallelisation and workspace).  Python-level
preparation stays here: the pooling kernels receive their window tables and
average divisor from :mod:`cyconv.backends._pool_tables`, the convolutions their tap
ranges from :mod:`cyconv.backends._conv_tables`.  Inputs are
assumed validated by the public boundary (see :mod:`cyconv.backends`);
``np.ascontiguousarray`` is applied defensively (a no-op for conforming
arrays).  The modules come in one build per CPU variant; the import below
takes the one :mod:`cyconv._cpu` selected.  ``n_threads`` is a resolved positive int.

No kernel here calls BLAS: convolution's GEMMs are cyconv's own
(``cyconv_ext/include/cyconv_gemm.h``), run on the kernel's OpenMP threads.
"""

from __future__ import annotations

import warnings

import numpy as np

from cyconv._shapes import winograd_serves
from cyconv._threads import threads_for_work
from cyconv_ext import _openmp_helpers

from .._cpu import import_kernels
from ._conv_tables import tap_column_ranges
from ._kernel_sets import SerialBuildWarning
from ._pool_tables import avg_divisor, pool_windows

# The build of those modules that this CPU runs best (baseline, avx2 or
# avx512; CYCONV_CPU_FEATURES overrides): see cyconv/_cpu.py.
_conv, _elementwise, _optim, _pool, _winograd = import_kernels(
    "_conv", "_elementwise", "_optim", "_pool", "_winograd")

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "relu_forward",
    "relu_backward",
]

_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32),
          np.dtype(np.float64): np.empty(0, np.float64)}
_EMPTY4 = {dtype: empty.reshape(0, 0, 0, 0) for dtype, empty in _EMPTY.items()}

# Below this much work (multiply-adds or elements visited) per thread, waking
# another OpenMP thread costs more than it saves -- on a loaded machine a
# parallel region can wait milliseconds for a core.  Results do not depend on
# the thread count, so the cap changes speed only.
WORK_PER_THREAD = 1 << 16
# The GEMM backward opens up to three parallel regions (dW, the slot sum, dx),
# each waking the threads again: it asks BACKWARD_WORK_FACTOR times the work per thread.
# Measured at batch 1, 2 threads against 1 (docs/performance.md): the book's
# 5x5 conv (0.9 M multiply-adds) ran 0.32x, LeNet conv2 (0.5 M) 0.70x, the
# strided conv (9 M) 1.11x, VGG (231 M) 1.63x.
BACKWARD_WORK_FACTOR = 16


#: False for a build without OpenMP (the kernels then ignore their thread count).
OPENMP_ENABLED = _openmp_helpers.openmp_enabled()
_serial_warned = False


def _warn_serial_build(n_threads):
    """Say once that a serial build runs a multi-thread request on one thread.

    A build's "no OpenMP" message is hidden by pip, so the run time says it.
    """
    global _serial_warned
    if not _serial_warned:
        _serial_warned = True
        warnings.warn(f"{n_threads} threads were asked of cyconv's compiled backend, but it was "
                      f"built without OpenMP and runs on one thread; install an OpenMP runtime "
                      f"(e.g. libgomp) and reinstall cyconv to use more "
                      f"(cyconv.show_config() shows 'openmp')", SerialBuildWarning, stacklevel=2)


def _useful_threads(n_threads, work):
    if n_threads > 1 and not OPENMP_ENABLED:
        _warn_serial_build(n_threads)
    return threads_for_work(n_threads, work, WORK_PER_THREAD)


def _conv_work(x, w, geom):
    return _conv_work_shapes((x.shape[0], w.shape[0], geom.out_h, geom.out_w), w.shape)


def _conv_work_shapes(out_shape, w_shape):
    """Multiply-adds of a direct convolution with this output and kernel (Python ints:
    no overflow, and no NumPy call on every convolution's path)."""
    n, oc, oh, ow = out_shape
    return n * oc * oh * ow * w_shape[1] * w_shape[2] * w_shape[3]


def _pool_work(shape, geom):
    return shape[0] * shape[1] * geom.out_h * geom.out_w * geom.kernel_h * geom.kernel_w


# -- convolution: algorithm choice ---------------------------------------------

#: What ``algorithm=`` may name on this backend ("auto" picks one per call).
CONV2D_ALGORITHMS = ("gemm", "winograd")

# "auto" takes Winograd for a 3x3, stride-1, dilation-1 kernel where it measured
# faster than im2col+GEMM (tools/tune_conv_algorithms.py, 2 threads, AMD EPYC
# Zen 3, 2026-12-02; the table is in docs/performance.md, "Algorithm choice"):
# a group has at least WINOGRAD_MIN_CHANNELS input and output channels (float32:
# 32; float64, whose GEMM is half as fast, 16), the output is at least
# WINOGRAD_MIN_SIZE pixels each way (on 7x7 and 14x14 outputs GEMM won at every
# channel count: 4x4 tiles waste a fifth of the work there) and the call has
# enough 4x4 output tiles (WINOGRAD_MIN_TILES: a batch of one 28x28 image, 49
# tiles, lost to GEMM in every pass; from 128 tiles on, all three passes won; at
# 64 tiles, one 32x32 image, only the float64 forward won in every measurement,
# 1.15-1.44x: WINOGRAD_MIN_TILES_F64_FORWARD; on an AVX-512 Xeon after the
# transforms were vectorised, the float32 forward at 64 tiles tied, median 1.02x,
# docs/performance.md).  The weight gradient follows the
# same rule, except in float64 with 128 channels or more, where GEMM measured as
# fast or faster (0.35-0.98x).
WINOGRAD_MIN_CHANNELS = {np.dtype(np.float32): 32, np.dtype(np.float64): 16}
WINOGRAD_MIN_SIZE = 28
WINOGRAD_MIN_TILES = 128
WINOGRAD_MIN_TILES_F64_FORWARD = 64
WINOGRAD_DW_MAX_CHANNELS_F64 = 128
# One thread's Winograd workspace (transformed inputs V and products M of a
# tile block) is kept near L2 size: the block holds as many tiles as fit, 8-64,
# and a call has at least WINOGRAD_MIN_BLOCKS blocks when it has the tiles, so
# that one image keeps every core busy.  Both depend on the shape only, never
# on the thread count (bitwise identical results for any n_threads).
WINOGRAD_WORKSPACE_CAP = 1 << 21
WINOGRAD_MAX_TILES = 64
WINOGRAD_MIN_BLOCKS = 4
# A Winograd output of at least WINOGRAD_STREAM_MIN_BYTES whose rows are whole
# cache lines is written around the caches (non-temporal stores into a
# line-aligned array, cyconv_ext/include/cyconv_im2col.h): a plain store first
# reads the line it writes, and an output this large has mostly left the cache
# before the next layer reads it.  Same values either way.  Measured streamed /
# plain time, 2 threads, blocks of 8 calls interleaved, medians of 7
# (docs/performance.md, "Streaming stores"), AMD EPYC Zen 4 (32 MiB L3), the
# convolution followed by the ReLU that reads its output: float64 CIFAR (32 MiB)
# 0.95-0.96, 128 images (64 MiB) 0.98, 64x64 planes (32 MiB) 0.97, float64 VGG
# (25.7 MiB) 1.00, float32 at 32 MiB 1.02; float32 CIFAR (16 MiB) lost
# 1.02-1.03, float64 at 8 MiB tied (1.00); the float64 forward alone at 4 MiB
# lost 1.26.  AVX-512 Xeon (105 MiB L3), the pass alone: float64 CIFAR forward
# 0.65-0.93, dx 0.81-0.99.  Rows that are not whole lines (float32 VGG, 224
# bytes) lost 1.08-1.36 on dx.  After the transforms' prefetch (71cb92d), blocks
# of 3 calls, medians of 11, with a consumer / alone: float64 at 16 MiB (the
# CIFAR dx, 32 output channels) 0.96-0.97 / 0.95, float32 CIFAR (16 MiB) 1.00 /
# 0.99, float32 at 32 MiB 1.00 / 0.99: the threshold moved from 20 to 16 MiB.
WINOGRAD_STREAM_MIN_BYTES = 16 << 20
CACHE_LINE = 64


def conv2d_algorithm(x_shape, w_shape, geom, groups=1, algorithm="auto", pass_name="forward",
                     dtype=np.float32):
    """The algorithm a pass runs: ``"gemm"`` or ``"winograd"`` ("auto" resolved).

    ``pass_name`` is ``"forward"``, ``"input_grad"`` (a convolution of dy with
    the flipped kernel) or ``"weight_grad"``.  An explicit ``algorithm``
    serves every pass."""
    if algorithm != "auto":
        return algorithm
    dtype = np.dtype(dtype)
    channels = min(x_shape[1] // groups, w_shape[0] // groups)
    tiles = x_shape[0] * -(-geom.out_h // 4) * -(-geom.out_w // 4)
    if not (winograd_serves(geom) and channels >= WINOGRAD_MIN_CHANNELS.get(dtype, 32)
            and min(geom.out_h, geom.out_w) >= WINOGRAD_MIN_SIZE
            and tiles >= (WINOGRAD_MIN_TILES_F64_FORWARD
                          if pass_name == "forward" and dtype == np.float64
                          else WINOGRAD_MIN_TILES)):
        return "gemm"
    if (pass_name == "weight_grad" and dtype == np.float64
            and channels >= WINOGRAD_DW_MAX_CHANNELS_F64):
        return "gemm"
    return "winograd"


def _winograd_tile(out_h, out_w):
    """F(4x4, 3x3) unless the output is too small for 4x4 tiles to pay."""
    return 4 if min(out_h, out_w) >= 8 else 2


def _output_tiles(out_shape, m):
    """m x m output tiles of a pass over all images (one group)."""
    return out_shape[0] * -(-out_shape[2] // m) * -(-out_shape[3] // m)


def _tile_block(cg, ocg, m, dtype, out_shape, groups):
    """Tiles per work item, from the shape alone."""
    per_tile = (m + 2) ** 2 * (cg + ocg) * np.dtype(dtype).itemsize
    tiles = _output_tiles(out_shape, m)
    spread = -(-tiles * groups // WINOGRAD_MIN_BLOCKS)
    return int(max(8, min(WINOGRAD_MAX_TILES, WINOGRAD_WORKSPACE_CAP // per_tile, spread)))


def _winograd_weights(w, groups, m, n_threads):
    oc, cg = w.shape[:2]
    u = np.empty((groups, (m + 2) ** 2, oc // groups, cg), dtype=w.dtype)
    return u, _winograd.weight_transform(w, u, m, n_threads)


def _flipped_kernel(w, groups):
    """The kernel of dx as a convolution of dy: flipped, in and out channels swapped."""
    oc, cg, kh, kw = w.shape
    ocg = oc // groups
    return np.ascontiguousarray(w.reshape(groups, ocg, cg, kh, kw)[:, :, :, ::-1, ::-1]
                                .transpose(0, 2, 1, 3, 4).reshape(groups * cg, ocg, kh, kw))


def _stream_winograd_output(out_shape, dtype):
    """Whether a Winograd pass writes its output with non-temporal stores."""
    itemsize = np.dtype(dtype).itemsize
    return (out_shape[3] * itemsize % CACHE_LINE == 0
            and int(np.prod(out_shape)) * itemsize >= WINOGRAD_STREAM_MIN_BYTES)


def _line_aligned_empty(shape, dtype):
    """np.empty(shape, dtype) whose data starts on a 64-byte (cache line) boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _winograd_conv(x, w, b, out_shape, pad_top, pad_left, groups, n_threads):
    """A Winograd pass (forward, or dx with the flipped kernel); None if not finite."""
    m = _winograd_tile(out_shape[2], out_shape[3])
    stream = _stream_winograd_output(out_shape, x.dtype)
    y = _line_aligned_empty(out_shape, x.dtype) if stream else np.empty(out_shape, x.dtype)
    bias = _EMPTY[x.dtype] if b is None else b
    tb = _tile_block(x.shape[1] // groups, w.shape[0] // groups, m, x.dtype, out_shape, groups)
    work = _conv_work_shapes(out_shape, w.shape) // 4
    threads = _useful_threads(n_threads, work)
    u, finite = _winograd_weights(w, groups, m, threads)
    if finite and _winograd.forward(x, u, bias, y, pad_top, pad_left, m, b is not None, tb,
                                    threads, stream):
        return y
    return None


# The batch-in-lanes GEMM forward (``_conv.conv2d_forward_lanes``: bitwise the
# im2col forward's result) where im2col's short rows cost the most: float32,
# stride 1, kernels larger than 1x1, at least one full A panel of images,
# output planes of at most LANES_MAX_PIXELS and at least LANES_MIN_TAPS taps
# per output.  Measured in-process against the im2col forward, 2 threads
# (docs/performance.md, "Batch in the lanes"): time ratio 0.72 (LeNet conv2,
# batch 64 and 32), 0.73 (64x64x8x8, 3x3 p1), 0.83 (64x16x16x16, 3x3 p1), 0.90
# (5x5, 144 pixels); slower on larger planes (CIFAR 32x32: 1.25, strided 64x64:
# 1.52), with 25 taps (the book conv: 1.94), with fewer images than a panel
# (1.16), for 1x1 kernels, which keep their im2col-free GEMM (1.81), and in
# float64 on all but LeNet (1.06-1.10).
LANES_MAX_PIXELS = 256
LANES_MIN_TAPS = 64


def _batch_in_lanes(x, w, geom):
    return (x.dtype == np.float32 and geom.stride_h == 1 and geom.stride_w == 1
            and w.shape[2] * w.shape[3] > 1 and x.shape[0] >= _conv.LANE_PANEL[4]
            and geom.out_h * geom.out_w <= LANES_MAX_PIXELS
            and w.shape[1] * w.shape[2] * w.shape[3] >= LANES_MIN_TAPS)


def conv2d_forward(x, w, b, geom, groups=1, n_threads=1, algorithm="auto"):
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    bias = None if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    out_shape = (x.shape[0], w.shape[0], geom.out_h, geom.out_w)
    if conv2d_algorithm(x.shape, w.shape, geom, groups, algorithm, "forward",
                        x.dtype) == "winograd":
        y = _winograd_conv(x, w, bias, out_shape, geom.pad_top, geom.pad_left, groups,
                           n_threads)
        if y is not None:
            return y
    y = np.empty(out_shape, dtype=x.dtype)
    bias = _EMPTY[x.dtype] if bias is None else bias
    threads = _useful_threads(n_threads, _conv_work(x, w, geom))
    if _batch_in_lanes(x, w, geom):
        _conv.conv2d_forward_lanes(x, w, bias, y, geom, int(groups), b is not None, threads)
    else:
        _conv.conv2d_forward(x, w, bias, y, geom, int(groups), b is not None,
                             *tap_column_ranges(geom, x.shape[3]), threads)
    return y


# Winograd's dW sums its items into S slot copies of dU (fixed by the shape, so
# that the result does not depend on the thread count); each copy is written
# whole and read back by the slot sum, which costs about a sixth of an item on
# CIFAR.  So a slot gets at least WINOGRAD_DW_ITEMS_PER_SLOT items, and S is a
# power of two (an even split over 2, 4, 8 threads), at most _conv.MAX_SLOTS.
# Measured against 16 slots (in-process blocks, 2 threads, Zen 4, after the
# transforms' prefetch): CIFAR (64 items) 8 slots 0.955 (float64) 0.960
# (float32); VGG (56 items) 4 slots 0.897 / 0.951, 8 slots 0.955 / 0.899; 128
# CIFAR images (128 items: 16 slots under the rule) 8 slots 0.976 / 1.01.  Small
# calls keep WINOGRAD_MIN_BLOCKS slots (one image keeps 4 threads busy, as its
# blocks do).  The price: a shape with fewer than 16 * 8 items keeps at most S
# threads busy in its dW.
WINOGRAD_DW_ITEMS_PER_SLOT = 8


def _winograd_dw_slots(items, slot_bytes):
    """dW slot copies for ``items`` work items of ``slot_bytes`` each (shape only)."""
    want = max(min(items, WINOGRAD_MIN_BLOCKS), items // WINOGRAD_DW_ITEMS_PER_SLOT)
    cap = min(_conv.MAX_SLOTS, want, _conv.DW_SLOT_CAP // max(1, slot_bytes))
    return 1 << (max(1, cap).bit_length() - 1)


def _winograd_weight_grad(dy, x, w, geom, groups, n_threads, db=None):
    """dW by Winograd, or None when a value was not finite; ``db`` (if given)
    filled on the way, from the dy the gradient transform reads."""
    m = _winograd_tile(geom.out_h, geom.out_w)
    dw = np.empty_like(w)
    cg, ocg = w.shape[1], w.shape[0] // groups
    tb = _tile_block(cg, ocg, m, x.dtype, dy.shape, groups)
    slot_bytes = groups * (m + 2) ** 2 * ocg * cg * x.dtype.itemsize
    items = groups * -(-_output_tiles(dy.shape, m) // tb)     # the kernel's (group, block)s
    slots = _winograd_dw_slots(items, slot_bytes)
    threads = _useful_threads(n_threads, _conv_work(x, w, geom) // 4)
    in_kernel = db is not None and w.size > 0      # the kernel needs OC and Cg >= 1
    if not _winograd.weight_grad(dy, x, dw, db if in_kernel else _EMPTY[x.dtype],
                                 geom.pad_top, geom.pad_left, m, int(groups), tb, slots,
                                 threads, in_kernel):
        return None
    if db is not None and not in_kernel:
        _conv.bias_grad(dy, db, _useful_threads(n_threads, dy.size))
    return dw


def conv2d_backward(dy, x, w, geom, groups=1, n_threads=1, need_dx=True, algorithm="auto"):
    """(dx, dw, db); dx and dw each by the algorithm its pass runs (see
    ``conv2d_algorithm``).  A call whose Winograd pass met a non-finite value
    runs wholly by GEMM, so its special values are the reference's."""
    x = np.ascontiguousarray(x)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    db = np.empty(w.shape[0], dtype=x.dtype)
    dx = dw = None
    finite = True
    if need_dx and conv2d_algorithm(x.shape, w.shape, geom, groups, algorithm,
                                    "input_grad", x.dtype) == "winograd":
        dx = _winograd_conv(dy, _flipped_kernel(w, groups), None, x.shape,
                            2 - geom.pad_top, 2 - geom.pad_left, groups, n_threads)
        finite = dx is not None
    if finite and conv2d_algorithm(x.shape, w.shape, geom, groups, algorithm,
                                   "weight_grad", x.dtype) == "winograd":
        dw = _winograd_weight_grad(dy, x, w, geom, groups, n_threads, db)
        finite = dw is not None
    if not finite:
        dx = dw = None
    gemm_dx, gemm_dw = need_dx and dx is None, dw is None
    if gemm_dx or gemm_dw:
        dx = np.empty_like(x) if gemm_dx else dx
        dw = np.empty_like(w) if gemm_dw else dw
        work = (int(gemm_dx) + int(gemm_dw)) * _conv_work(x, w, geom)
        # db with dW: in its parallel regions (each region start wakes the threads), or
        # by Winograd's dW above
        _conv.conv2d_backward(dy, x, w, dx if gemm_dx else _EMPTY4[x.dtype], dw, db, geom,
                              int(groups), *tap_column_ranges(geom, x.shape[3]),
                              _useful_threads(n_threads, work // BACKWARD_WORK_FACTOR),
                              gemm_dx, gemm_dw, gemm_dw)
    return dx, dw, db


def max_pool2d_forward(x, geom, n_threads=1):
    x = np.ascontiguousarray(x)
    shape = (x.shape[0], x.shape[1], geom.out_h, geom.out_w)
    y = np.empty(shape, dtype=x.dtype)
    indices = np.empty(shape, dtype=np.int64)
    _pool.max_pool2d_forward(x, y, indices, geom, pool_windows(geom),
                             _useful_threads(n_threads, _pool_work(shape, geom)))
    return y, indices


def max_pool2d_backward(dy, indices, x_shape, n_threads=1):
    dy = np.ascontiguousarray(dy)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    dx = np.empty(tuple(x_shape), dtype=dy.dtype)
    _pool.max_pool2d_backward(dy, indices, dx, _useful_threads(n_threads, dx.size))
    return dx


def avg_pool2d_forward(x, geom, count_include_pad=True, divisor_override=None, n_threads=1):
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], x.shape[1], geom.out_h, geom.out_w), dtype=x.dtype)
    div = avg_divisor(geom, count_include_pad, divisor_override, x.dtype)
    _pool.avg_pool2d_forward(x, y, div, geom, pool_windows(geom),
                             _useful_threads(n_threads, _pool_work(y.shape, geom)))
    return y


def avg_pool2d_backward(dy, x_shape, geom, count_include_pad=True, divisor_override=None,
                        n_threads=1):
    dy = np.ascontiguousarray(dy)
    dx = np.empty(tuple(x_shape), dtype=dy.dtype)
    div = avg_divisor(geom, count_include_pad, divisor_override, dy.dtype)
    _pool.avg_pool2d_backward(dy, dx, div, geom, pool_windows(geom),
                              _useful_threads(n_threads, _pool_work(dy.shape, geom)))
    return dx


def relu_forward(x, n_threads=1):
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    positive = np.empty(x.shape, dtype=np.bool_)
    _elementwise.relu_forward(x.reshape(-1), y.reshape(-1), positive.reshape(-1).view(np.uint8),
                              _useful_threads(n_threads, x.size))
    return y, positive


def relu_backward(dout, positive, n_threads=1):
    dout = np.ascontiguousarray(dout)
    positive = np.ascontiguousarray(positive, dtype=np.bool_)
    dx = np.empty_like(dout)
    _elementwise.relu_backward(dout.reshape(-1), positive.reshape(-1).view(np.uint8),
                               dx.reshape(-1), _useful_threads(n_threads, dout.size))
    return dx


def adam_update(p, g, m, v, lr_t, beta1, beta2, eps, n_threads=1):
    """One fused Adam step, in place, bitwise NumPy's (see ``cyconv_ext/_optim.pyx``).

    The caller passes C-contiguous, writeable ``p``, ``m``, ``v`` and ``g``
    of one float dtype.
    """
    _optim.adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                       float(lr_t), float(beta1), float(beta2), float(eps),
                       _useful_threads(n_threads, p.size))
