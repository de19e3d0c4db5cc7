# Shared fused types for every cyconv kernel (and for plugins that cimport it).
#
# One definition keeps float32/float64 specialisations consistent across
# modules: a kernel written against ``floating_t`` is compiled twice, once per
# dtype, and the Python wrapper picks the specialisation from the array dtype.

ctypedef fused floating_t:
    float
    double

# Index type for flat offsets and argmax indices (matches numpy.intp on 64-bit).
ctypedef Py_ssize_t index_t
