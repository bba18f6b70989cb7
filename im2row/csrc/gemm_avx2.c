/* AVX2+FMA GEMM microkernels: 6x16 f32 and 6x8 f64 (12 ymm accumulators). The target pragma
 * applies to this file only; select_kernels_* return them only on CPUs that have AVX2 and FMA. */
#include "gemm.h"
#ifdef I2R_X86
/* every function of this file gets the target; clang ignores "#pragma GCC target" (the
 * attribute push applies it there), gcc takes the pragma */
#ifdef __clang__   /* (its intrinsics carry their own target attributes) */
#include <immintrin.h>
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#include <immintrin.h>
#endif

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
#define V_STREAM(p, v) _mm256_stream_ps(p, v)
#define V_STREAM16(p, v)                                                                     \
    (_mm_stream_ps(p, _mm256_castps256_ps128(v)),                                           \
     _mm_stream_ps((p) + 4, _mm256_extractf128_ps(v, 1)))
#define V_STORE_N(p, v, n) _mm256_maskstore_ps(p, lane_mask_32(n), v)
#define V_BCAST(p) _mm256_broadcast_ss(p)
#define V_FMA(a, b, acc) _mm256_fmadd_ps(a, b, acc)
#define V_MAX(a, b) _mm256_max_ps(a, b)
#include "gemm_ukernel.template.h"
#define WINO_IN_NAME wino_in_f32_avx2
#define WINO_OUT_NAME wino_out_f32_avx2
#define WINO_W_NAME wino_w_f32_avx2
#define V_ADD(a, b) (_mm256_add_ps(a, b))
#define V_SUB(a, b) (_mm256_sub_ps(a, b))
#define V_MUL(a, b) (_mm256_mul_ps(a, b))
#include "winograd_ukernel.template.h"
#define DWNAME dwconv_f32_avx2
#define DWPLANENAME dwplane_f32_avx2
#define DWROWNAME dwrow_f32_avx2
#define DWROW_R 6
#define DWROW_NV 1
#define DWV 2
#define DWR 4
#include "dwconv_ukernel.template.h"

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
#define V_STREAM(p, v) _mm256_stream_pd(p, v)
#define V_STREAM16(p, v)                                                                     \
    (_mm_stream_pd(p, _mm256_castpd256_pd128(v)),                                           \
     _mm_stream_pd((p) + 2, _mm256_extractf128_pd(v, 1)))
#define V_STORE_N(p, v, n) _mm256_maskstore_pd(p, lane_mask_64(n), v)
#define V_BCAST(p) _mm256_broadcast_sd(p)
#define V_FMA(a, b, acc) _mm256_fmadd_pd(a, b, acc)
#define V_MAX(a, b) _mm256_max_pd(a, b)
#include "gemm_ukernel.template.h"
#define WINO_IN_NAME wino_in_f64_avx2
#define WINO_OUT_NAME wino_out_f64_avx2
#define WINO_W_NAME wino_w_f64_avx2
#define V_ADD(a, b) (_mm256_add_pd(a, b))
#define V_SUB(a, b) (_mm256_sub_pd(a, b))
#define V_MUL(a, b) (_mm256_mul_pd(a, b))
#include "winograd_ukernel.template.h"
#define DWNAME dwconv_f64_avx2
#define DWPLANENAME dwplane_f64_avx2
#define DWROWNAME dwrow_f64_avx2
#define DWROW_R 6
#define DWROW_NV 1
#define DWV 2
#define DWR 4
#include "dwconv_ukernel.template.h"

/* 8x8 f32 and 4x4 f64 transposes in registers: dst[c*dst_ld + r] = src[r*src_ld + c]. Only
 * AVX instructions, so the AVX-512 level uses them too. */
void transpose_f32_8x8_avx2(const float *src, size_t src_ld, float *dst, size_t dst_ld)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + i * src_ld);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + i * dst_ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * dst_ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

void transpose_f64_4x4_avx2(const double *src, size_t src_ld, double *dst, size_t dst_ld)
{
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + src_ld);
    __m256d r2 = _mm256_loadu_pd(src + 2 * src_ld), r3 = _mm256_loadu_pd(src + 3 * src_ld);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + dst_ld, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * dst_ld, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * dst_ld, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#define SC_LINE(d, s)                                                                      \
    (_mm256_stream_ps((float *)(d), _mm256_loadu_ps((const float *)(s))),                     \
     _mm256_stream_ps((float *)((d) + 32), _mm256_loadu_ps((const float *)((s) + 32))))
#define SC_NAME stream_copy_avx2
#include "stream_copy.template.h"
#ifdef __clang__
#pragma clang attribute pop
#endif
#endif
