# A window geometry as one C struct, for kernels that loop without the GIL.
#
# The fields of cyconv._shapes.Geometry that a kernel reads, under short
# names: input H x W, kernel KH x KW, stride SH x SW, dilation DH x DW, top
# and left padding PT, PL (bottom and right padding never need reading: a
# position outside the input is padding), output OH x OW.  H, W, OH and OW
# are taken from the arrays the kernel is given, which the contract makes
# consistent with the geometry.  _conv.pyx and _pool.pyx both use it.

from ._fused cimport index_t

ctypedef struct window_geom:
    index_t H, W, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW


cdef inline window_geom make_window_geom(geom, index_t H, index_t W, index_t OH, index_t OW):
    """The struct of a Geometry-like ``geom`` for arrays of H x W in, OH x OW out."""
    cdef window_geom g
    g.H = H
    g.W = W
    g.KH = geom.kernel_h
    g.KW = geom.kernel_w
    g.SH = geom.stride_h
    g.SW = geom.stride_w
    g.DH = geom.dilation_h
    g.DW = geom.dilation_w
    g.PT = geom.pad_top
    g.PL = geom.pad_left
    g.OH = OH
    g.OW = OW
    return g
