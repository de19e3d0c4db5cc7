# Design: the "BLAS on one thread" limit the convolution kernels run under
# (their single-threaded GEMMs run inside OpenMP threads, so the BLAS library
# must not start threads of its own).
#
# * One process-wide, reference-counted limit: the first caller in saves the
#   library's thread count and sets 1, the last one out restores it -- unless
#   the count is no longer 1 then (the user changed it meanwhile: theirs wins).
# * Entering and leaving are C functions that hold the GIL and run no Python
#   code, so the GIL is the lock and no signal or async exception can land
#   between the depth count and the limit (a ``with`` whose ``__enter__``
#   returned always reaches ``__exit__``, bpo-29988).
# * The limit goes straight to the library's own setter, bound by address
#   (cyconv.backends._gemm_blas finds it); not threadpoolctl, which changes
#   every BLAS in the process and, in 3.8, ignores all but one Python thread.
# * fork(): the child has only the forking thread, outside any kernel, so
#   ``after_fork_in_child`` drops the depth to 0 and restores.

ctypedef int (*get_threads_t)() noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil

cdef get_threads_t _get_threads = NULL
cdef set_threads_t _set_threads = NULL
cdef Py_ssize_t _depth = 0      # callers inside the limit
cdef int _saved = 0             # the count the first caller found
cdef bint _limited = False      # the first caller changed it (to 1)


def bind(size_t get_address, size_t set_address):
    """Control the library whose ``int get(void)`` / ``void set(int)``
    thread-count functions live at these addresses (0, 0: no library, the
    guard then does nothing).  Only while no caller is inside the limit."""
    global _get_threads, _set_threads
    if _depth:
        raise RuntimeError("cannot rebind the BLAS guard while a kernel runs under it")
    if (get_address == 0) != (set_address == 0):
        raise ValueError("bind() needs both thread-count functions or neither")
    _get_threads = <get_threads_t>get_address
    _set_threads = <set_threads_t>set_address


cdef void _enter() noexcept:
    global _depth, _saved, _limited
    _depth += 1
    if _depth == 1 and _get_threads != NULL:
        _saved = _get_threads()
        _limited = _saved > 1
        if _limited:
            _set_threads(1)


cdef void _leave() noexcept:
    global _depth, _limited
    if _depth == 0:
        return
    _depth -= 1
    if _depth == 0 and _limited:
        _limited = False
        if _get_threads() == 1:
            _set_threads(_saved)


cdef class OneBlasThread:
    """``with OneBlasThread():`` -- the bound BLAS runs one thread inside."""

    def __enter__(self):
        _enter()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        _leave()
        return False


def depth():
    """How many callers are inside the limit now."""
    return _depth


def blas_threads():
    """The bound library's thread count now (None if none is bound)."""
    if _get_threads == NULL:
        return None
    return _get_threads()


def after_fork_in_child():
    """In a fork() child: the callers inside the limit were other threads of
    the parent, absent here; leave for all of them (restores the count)."""
    global _depth
    if _depth:
        _depth = 1
        _leave()
