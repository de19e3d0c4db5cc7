# Design: numpy's BLAS runs cyconv's thread count inside cyconv's matrix
# products (cyconv._blas.matmul), and the user's count everywhere else.
# * One process-wide, reference-counted setting (the library's count is one
#   process-wide number): the first caller in saves the count, every caller in
#   sets its own (overlapping calls run the latest entrant's), the last one out
#   restores it -- unless the user changed it meanwhile: their setting wins.
# * Entering and leaving are C functions that hold the GIL and run no Python
#   code, so the GIL is the lock: no signal (KeyboardInterrupt) or async
#   exception can land between the depth count and the set/restore, and a
#   ``with`` whose ``__enter__`` returned always reaches ``__exit__`` (bpo-29988).
# * The count goes straight to the library's setter, bound once by address
#   (cyconv._blas finds the library numpy resolves to); not threadpoolctl: 3.8
#   ignores all but one controlling Python thread, 3.1 does not know numpy's
#   ``libscipy_openblas``, and a ``threadpool_limits`` costs tens of microseconds.
# * fork(): the child has only the forking thread, outside any product, so
#   ``after_fork_in_child`` drops the depth to 0 and restores.

ctypedef int (*get_threads_t)() noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil

cdef get_threads_t _get_threads = NULL
cdef set_threads_t _set_threads = NULL
cdef Py_ssize_t _depth = 0      # callers inside
cdef int _saved = 0             # the count the first caller found (the user's)
cdef int _applied = 0           # the count cyconv last set (0: it set none)


def bind(size_t get_address, size_t set_address):
    """Control the library whose ``int get(void)`` / ``void set(int)``
    thread-count functions live at these addresses (0, 0: no library, the
    guard then does nothing).  Only while no caller is inside."""
    global _get_threads, _set_threads
    if _depth:
        raise RuntimeError("cannot rebind the BLAS guard while a call runs under it")
    if (get_address == 0) != (set_address == 0):
        raise ValueError("bind() needs both thread-count functions or neither")
    _get_threads = <get_threads_t>get_address
    _set_threads = <set_threads_t>set_address


cdef void _enter(int n_threads) noexcept:
    global _depth, _saved, _applied
    _depth += 1
    if _get_threads == NULL:
        return
    cdef int now = _get_threads()
    if _depth == 1:
        _saved = now
        _applied = 0
    if now != n_threads:
        _set_threads(n_threads)
        _applied = n_threads


cdef void _leave() noexcept:
    global _depth, _applied
    if _depth == 0:
        return
    _depth -= 1
    if _depth == 0 and _applied:
        if _get_threads() == _applied:
            _set_threads(_saved)
        _applied = 0


cdef class BlasThreads:
    """``with BlasThreads(n):`` -- the bound BLAS runs ``n`` (>= 1) threads inside."""

    cdef int n_threads

    def __init__(self, int n_threads):
        if n_threads < 1:
            raise ValueError(f"BlasThreads needs a positive thread count, got {n_threads}")
        self.n_threads = n_threads

    def __enter__(self):
        if self.n_threads < 1:   # __init__ was not run (a subclass skipped it)
            raise ValueError("BlasThreads needs a positive thread count, got none")
        _enter(self.n_threads)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        _leave()
        return False


def depth():
    """How many callers are inside now."""
    return _depth


def blas_threads():
    """The bound library's thread count now (None if none is bound)."""
    if _get_threads == NULL:
        return None
    return _get_threads()


def after_fork_in_child():
    """In a fork() child: the callers inside were other threads of the
    parent, absent here; leave for all of them (restores the count)."""
    global _depth
    if _depth:
        _depth = 1
        _leave()
