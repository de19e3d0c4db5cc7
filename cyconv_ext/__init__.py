"""Compiled kernels of cyconv (Cython + OpenMP).

The ``.pxd`` files here are public: plugins ``cimport`` them (see
``cyconv.get_include()``) to share cyconv's fused types and OpenMP guards.
Each kernel module is built once per CPU level (``_conv``, ``_conv_avx2``,
``_conv_avx512``, ...); import them through ``cyconv._cpu.import_kernels``,
which picks the one this CPU runs (importing a level the CPU lacks can crash).
"""
