# How many OpenMP threads a kernel asks for: shared by the Cython kernels.
# Without OpenMP (a compiler that lacks it) every kernel runs on one thread.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define MINCONV_MAX_THREADS() omp_get_max_threads()
    #define MINCONV_SET_THREADS(n) omp_set_num_threads(n)
    #else
    #define MINCONV_MAX_THREADS() 1
    #define MINCONV_SET_THREADS(n) ((void)(n))
    #endif
    """
    int max_threads "MINCONV_MAX_THREADS"() noexcept nogil
    void set_max_threads "MINCONV_SET_THREADS"(int n) noexcept nogil


cdef inline int threads_for(Py_ssize_t work) noexcept nogil:
    """One thread for jobs under 128K elements (tens of microseconds), else all.

    ``work`` counts the elements a kernel reads, writes or compares. Small jobs
    gain little from a second thread, and on a machine shared with other work
    a preempted team member can stall the whole team for a scheduler tick. The
    team's idle threads spin between calls (runtime), so a second thread joins in
    microseconds: from 1M elements down to 128K took densenet121's pass at batch 1
    from 59-60 to 55 ms, resnet50's from 61-63 to 59 (at batch 8, 2-3% slower).
    """
    return 1 if work < 131072 else max_threads()


cdef inline Py_ssize_t aligned_share(Py_ssize_t total, int threads,
                                     Py_ssize_t align) noexcept nogil:
    """Items per thread when ``threads`` split ``total`` in near-equal contiguous shares
    that start at multiples of ``align``."""
    return ((total + threads - 1) // threads + align - 1) // align * align


cdef inline Py_ssize_t piece_end(Py_ssize_t at, Py_ssize_t stop, Py_ssize_t P) noexcept nogil:
    """Where the piece from column ``at`` of a thread's range [.., stop) of images of P
    columns laid side by side ends: the range's end or the end of at's image."""
    return min(stop, (at // P + 1) * P)
