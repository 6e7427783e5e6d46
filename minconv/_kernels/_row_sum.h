/* The sum of a row of n values in their own type, in vector lanes:

       s = x[0] + x[1] + ... + x[n - 1]

   (omp simd reduction: the lanes' partial sums, then theirs; an order of its own, within
   the type's rounding of the exact sum). Shared by the batch-norm statistics (cpu_norm)
   and the plane means (cpu_avgpool). */
#ifndef MINCONV_ROW_SUM_H
#define MINCONV_ROW_SUM_H

#include <stddef.h>

#define MINCONV_ROW_SUM(T, S)                                   \
    static T mc_row_sum_##S(const T *x, ptrdiff_t n) {          \
        T s = 0;                                                \
        _Pragma("omp simd reduction(+:s)")                      \
        for (ptrdiff_t i = 0; i < n; i++) s += x[i];            \
        return s;                                               \
    }
MINCONV_ROW_SUM(float, f)
MINCONV_ROW_SUM(double, d)

#endif
