"""Benchmark the compiled kernels against the NumPy reference and PyTorch (CPU).

Usage::

    python -m cyconv.bench                 # every op, f32 and f64, 2 threads
    python -m cyconv.bench --threads 2 --json bench.json
    python -m cyconv.bench --ops conv_vgg,maxpool_3x3s2 --quick
    python -m cyconv.bench --ops 1,3,7     # by number (see --list)
    python -m cyconv.bench --scaling       # threads 1, 2, 4, ... up to all cores

For every op, dtype and pass (forward, forward+backward) it reports the median
time in ms of the cython backend, the numpy backend and, when ``torch`` is
importable, ``torch.nn.functional`` on CPU with the same thread count
(``torch.set_num_threads``), plus the ratios torch/cython and numpy/cython
(> 1 means cython is faster), all measured in the same run: the libraries
take turns, one call each per round, so that a slow spell on a shared machine
hits every side of a ratio alike.

Environment.  OpenBLAS reads ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` when
it is loaded; on some machines these are set to values that halve GEMM speed.
glibc's default malloc returns large freed blocks to the OS, so every call
page-faults its output buffers afresh (PyTorch suffers most).  So, before
NumPy is imported, the benchmark re-executes itself once with both OpenBLAS
variables removed and ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_``
raised, for every library measured alike (``--no-reexec`` measures the
environment as it is; the header then warns).  Timings go through the public
functional API (``cyconv.conv2d(..., backend=...)``, validation included) when
it is available, else straight to the kernel modules.

The package: :mod:`~cyconv.bench.ops` (the table of ops), :mod:`~cyconv.bench.calls`
(the timed calls per library), :mod:`~cyconv.bench.timing` (the interleaved
rounds), :mod:`~cyconv.bench.report` (table and JSON), :mod:`~cyconv.bench.environment`
(re-exec, malloc, header) and :mod:`~cyconv.bench.cli` (the options).
"""

from __future__ import annotations

from .cli import main
from .ops import NET_CONVS, OPS, QUICK_OPS

__all__ = ["main", "OPS", "NET_CONVS", "QUICK_OPS"]
