/* AVX-512 GEMM microkernels: 14x32 f32 and 14x16 f64 (28 zmm accumulators, no spills; the
 * prototype measured 14x32 at 94-97% of the FMA peak on well-shaped layers). Masked loads and
 * stores handle the OC tail. select_kernels_* return them only on CPUs with AVX-512F. */
#include "gemm.h"
#ifdef I2R_X86
#ifdef __clang__   /* see gemm_avx2.c */
#include <immintrin.h>
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC target("avx512f")
#include <immintrin.h>
#endif

#define LANES(n) ((__mmask16)((1u << (n)) - 1u))
/* 16-byte lane j of a double vector (AVX-512F alone: extractf64x2 needs DQ) */
#define LANE_PD(v, j) _mm_castps_pd(_mm512_extractf32x4_ps(_mm512_castpd_ps(v), j))

#define T float
#define V __m512
#define VN 16
#define MR 14
#define NRV 2
#define KNAME gemm_f32_14x32_avx512
#define V_ZERO() _mm512_setzero_ps()
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_LOAD_N(p, n) _mm512_maskz_loadu_ps(LANES(n), p)
#define V_STORE(p, v) _mm512_storeu_ps(p, v)
#define V_STREAM(p, v) _mm512_stream_ps(p, v)
#define V_STREAM16(p, v)                                                                     \
    (_mm_stream_ps(p, _mm512_extractf32x4_ps(v, 0)),                                         \
     _mm_stream_ps((p) + 4, _mm512_extractf32x4_ps(v, 1)),                                   \
     _mm_stream_ps((p) + 8, _mm512_extractf32x4_ps(v, 2)),                                   \
     _mm_stream_ps((p) + 12, _mm512_extractf32x4_ps(v, 3)))
#define V_STORE_N(p, v, n) _mm512_mask_storeu_ps(p, LANES(n), v)
#define V_BCAST(p) _mm512_set1_ps(*(p))
#define V_FMA(a, b, acc) _mm512_fmadd_ps(a, b, acc)
#define V_MAX(a, b) _mm512_max_ps(a, b)
#include "gemm_ukernel.template.h"
#define WINO_IN_NAME wino_in_f32_avx512
#define WINO_OUT_NAME wino_out_f32_avx512
#define WINO_W_NAME wino_w_f32_avx512
#define V_ADD(a, b) (_mm512_add_ps(a, b))
#define V_SUB(a, b) (_mm512_sub_ps(a, b))
#define V_MUL(a, b) (_mm512_mul_ps(a, b))
#include "winograd_ukernel.template.h"
#define DWNAME dwconv_f32_avx512
#define DWPLANENAME dwplane_f32_avx512
#define DWROWNAME dwrow_f32_avx512
#define DWROW_R 8
#define DWROW_NV 2
#define DWV 4
#define DWR 4
#include "dwconv_ukernel.template.h"

#define T double
#define V __m512d
#define VN 8
#define MR 14
#define NRV 2
#define KNAME gemm_f64_14x16_avx512
#define V_ZERO() _mm512_setzero_pd()
#define V_LOAD(p) _mm512_loadu_pd(p)
#define V_LOAD_N(p, n) _mm512_maskz_loadu_pd((__mmask8)LANES(n), p)
#define V_STORE(p, v) _mm512_storeu_pd(p, v)
#define V_STREAM(p, v) _mm512_stream_pd(p, v)
#define V_STREAM16(p, v)                                                                     \
    (_mm_stream_pd(p, LANE_PD(v, 0)), _mm_stream_pd((p) + 2, LANE_PD(v, 1)),                   \
     _mm_stream_pd((p) + 4, LANE_PD(v, 2)), _mm_stream_pd((p) + 6, LANE_PD(v, 3)))
#define V_STORE_N(p, v, n) _mm512_mask_storeu_pd(p, (__mmask8)LANES(n), v)
#define V_BCAST(p) _mm512_set1_pd(*(p))
#define V_FMA(a, b, acc) _mm512_fmadd_pd(a, b, acc)
#define V_MAX(a, b) _mm512_max_pd(a, b)
#include "gemm_ukernel.template.h"
#define WINO_IN_NAME wino_in_f64_avx512
#define WINO_OUT_NAME wino_out_f64_avx512
#define WINO_W_NAME wino_w_f64_avx512
#define V_ADD(a, b) (_mm512_add_pd(a, b))
#define V_SUB(a, b) (_mm512_sub_pd(a, b))
#define V_MUL(a, b) (_mm512_mul_pd(a, b))
#include "winograd_ukernel.template.h"
#define DWNAME dwconv_f64_avx512
#define DWPLANENAME dwplane_f64_avx512
#define DWROWNAME dwrow_f64_avx512
#define DWROW_R 8
#define DWROW_NV 2
#define DWV 4
#define DWR 4
#include "dwconv_ukernel.template.h"
#define SC_LINE(d, s) _mm512_stream_ps((float *)(d), _mm512_loadu_ps((const float *)(s)))
#define SC_NAME stream_copy_avx512
#include "stream_copy.template.h"
#ifdef __clang__
#pragma clang attribute pop
#endif
#endif
