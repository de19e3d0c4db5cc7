"""Compiled kernels of cyconv (Cython + OpenMP).

The ``.pxd`` files here are public: plugins ``cimport`` them (see
``cyconv.get_include()``) to share cyconv's fused types and OpenMP guards.
"""
