# Copy and add short contiguous runs of floats: the rows of 7x7 and 14x14 maps.
#
# A call to memcpy or a vectorised loop with a run-time length pays a fixed cost
# (the call, a prologue, a scalar epilogue) that a 7- or 14-float row never
# amortises. These move 16 bytes at a time and finish with one move that
# overlaps the one before it, so a row of n >= 16/sizeof floats takes
# ceil(n / (16/sizeof)) moves and no scalar tail. The overlapped add loads its
# last block before any store, so every element still gets exactly one
# ``dst += src``: the sums are those of the plain loop, bit for bit.

cdef extern from *:
    """
    #include <string.h>
    #if defined(__GNUC__) || defined(__clang__)
    #define MINCONV_VECTOR_ADD 1
    typedef float minconv_f4 __attribute__((vector_size(16)));
    typedef double minconv_d2 __attribute__((vector_size(16)));
    #endif

    /* 16-byte moves through memcpy with a constant size: one unaligned load or
       store on every architecture, with no aliasing trouble. */
    #define MINCONV_DEFINE_COPY(name, T)                                          \\
    static inline void name(T *restrict dst, const T *restrict src, Py_ssize_t n) { \\
        const Py_ssize_t lanes = 16 / sizeof(T);                                  \\
        if (n < lanes) {                                                          \\
            for (Py_ssize_t i = 0; i < n; i++) dst[i] = src[i];                   \\
            return;                                                               \\
        }                                                                         \\
        for (Py_ssize_t k = 0; k + lanes < n; k += lanes)                         \\
            memcpy(dst + k, src + k, 16);                                         \\
        memcpy(dst + n - lanes, src + n - lanes, 16);                             \\
    }
    MINCONV_DEFINE_COPY(minconv_copy_f, float)
    MINCONV_DEFINE_COPY(minconv_copy_d, double)

    #ifdef MINCONV_VECTOR_ADD
    #define MINCONV_DEFINE_ADD(name, T, V)                                        \\
    static inline void name(T *restrict dst, const T *restrict src, Py_ssize_t n) { \\
        const Py_ssize_t lanes = 16 / sizeof(T);                                  \\
        V a, b, tail;                                                             \\
        if (n < lanes) {                                                          \\
            for (Py_ssize_t i = 0; i < n; i++) dst[i] += src[i];                  \\
            return;                                                               \\
        }                                                                         \\
        memcpy(&a, dst + n - lanes, 16);                                          \\
        memcpy(&b, src + n - lanes, 16);                                          \\
        tail = a + b;                      /* before the loop overwrites it */   \\
        for (Py_ssize_t k = 0; k + lanes < n; k += lanes) {                       \\
            memcpy(&a, dst + k, 16);                                              \\
            memcpy(&b, src + k, 16);                                              \\
            a += b;                                                               \\
            memcpy(dst + k, &a, 16);                                              \\
        }                                                                         \\
        memcpy(dst + n - lanes, &tail, 16);                                       \\
    }
    MINCONV_DEFINE_ADD(minconv_add_f, float, minconv_f4)
    MINCONV_DEFINE_ADD(minconv_add_d, double, minconv_d2)
    #else  /* no vector extensions: the plain loop */
    static inline void minconv_add_f(float *restrict dst, const float *restrict src,
                                     Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dst[i] += src[i];
    }
    static inline void minconv_add_d(double *restrict dst, const double *restrict src,
                                     Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dst[i] += src[i];
    }
    #endif
    """
    void copy_row_f "minconv_copy_f"(float *dst, const float *src, Py_ssize_t n) noexcept nogil
    void copy_row_d "minconv_copy_d"(double *dst, const double *src, Py_ssize_t n) noexcept nogil
    void add_row_f "minconv_add_f"(float *dst, const float *src, Py_ssize_t n) noexcept nogil
    void add_row_d "minconv_add_d"(double *dst, const double *src, Py_ssize_t n) noexcept nogil
