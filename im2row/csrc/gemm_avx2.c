/* AVX2+FMA GEMM microkernels: 6x16 f32 and 6x8 f64 (12 ymm accumulators). The target pragma
 * applies to this file only; gemm_select calls them only on CPUs that have AVX2 and FMA. */
#include "gemm.h"
#ifdef I2R_X86
#pragma GCC target("avx2,fma")
#include <immintrin.h>

static inline __m256i lane_mask_32(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256i lane_mask_64(int n)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}

#define T float
#define V __m256
#define VN 8
#define MR 6
#define NRV 2
#define KNAME gemm_f32_6x16_avx2
#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_LOAD_N(p, n) _mm256_maskload_ps(p, lane_mask_32(n))
#define V_STORE(p, v) _mm256_storeu_ps(p, v)
#define V_STORE_N(p, v, n) _mm256_maskstore_ps(p, lane_mask_32(n), v)
#define V_BCAST(p) _mm256_broadcast_ss(p)
#define V_FMA(a, b, acc) _mm256_fmadd_ps(a, b, acc)
#define V_MAX(a, b) _mm256_max_ps(a, b)
#include "gemm_ukernel.template.h"

#define T double
#define V __m256d
#define VN 4
#define MR 6
#define NRV 2
#define KNAME gemm_f64_6x8_avx2
#define V_ZERO() _mm256_setzero_pd()
#define V_LOAD(p) _mm256_loadu_pd(p)
#define V_LOAD_N(p, n) _mm256_maskload_pd(p, lane_mask_64(n))
#define V_STORE(p, v) _mm256_storeu_pd(p, v)
#define V_STORE_N(p, v, n) _mm256_maskstore_pd(p, lane_mask_64(n), v)
#define V_BCAST(p) _mm256_broadcast_sd(p)
#define V_FMA(a, b, acc) _mm256_fmadd_pd(a, b, acc)
#define V_MAX(a, b) _mm256_max_pd(a, b)
#include "gemm_ukernel.template.h"
#endif
