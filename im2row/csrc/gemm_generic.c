/* Portable GEMM microkernels in plain C: always compiled, used where no SIMD kernel applies
 * (non-x86 CPUs, or IM2ROW_ISA=generic), and always tested. */
#include "gemm.h"

#define T float
#define V float
#define VN 1
#define MR 4
#define NRV 16
#define KNAME gemm_f32_4x16_generic
#define V_ZERO() 0.0f
#define V_LOAD(p) (*(p))
#define V_LOAD_N(p, n) ((void)(n), *(p))
#define V_STORE(p, v) (*(p) = (v))
#define V_STREAM(p, v) (*(p) = (v))
#define V_STORE_N(p, v, n) ((void)(n), *(p) = (v))
#define V_BCAST(p) (*(p))
#define V_FMA(a, b, acc) ((a) * (b) + (acc))
#define V_MAX(a, b) ((a) > (b) ? (a) : (b))
#include "gemm_ukernel.template.h"
#define WINO_IN_NAME wino_in_f32_generic
#define WINO_OUT_NAME wino_out_f32_generic
#define WINO_W_NAME wino_w_f32_generic
#define V_ADD(a, b) ((a) + (b))
#define V_SUB(a, b) ((a) - (b))
#define V_MUL(a, b) ((a) * (b))
#include "winograd_ukernel.template.h"
#define DWNAME dwconv_f32_generic
#define DWPLANENAME dwplane_f32_generic
#define DWROWNAME dwrow_f32_generic
#define DWROW_R 4
#define DWROW_NV 4
#define DWV 8
#define DWR 4
#include "dwconv_ukernel.template.h"

#define T double
#define V double
#define VN 1
#define MR 4
#define NRV 8
#define KNAME gemm_f64_4x8_generic
#define V_ZERO() 0.0
#define V_LOAD(p) (*(p))
#define V_LOAD_N(p, n) ((void)(n), *(p))
#define V_STORE(p, v) (*(p) = (v))
#define V_STREAM(p, v) (*(p) = (v))
#define V_STORE_N(p, v, n) ((void)(n), *(p) = (v))
#define V_BCAST(p) (*(p))
#define V_FMA(a, b, acc) ((a) * (b) + (acc))
#define V_MAX(a, b) ((a) > (b) ? (a) : (b))
#include "gemm_ukernel.template.h"
#define WINO_IN_NAME wino_in_f64_generic
#define WINO_OUT_NAME wino_out_f64_generic
#define WINO_W_NAME wino_w_f64_generic
#define V_ADD(a, b) ((a) + (b))
#define V_SUB(a, b) ((a) - (b))
#define V_MUL(a, b) ((a) * (b))
#include "winograd_ukernel.template.h"
#define DWNAME dwconv_f64_generic
#define DWPLANENAME dwplane_f64_generic
#define DWROWNAME dwrow_f64_generic
#define DWROW_R 4
#define DWROW_NV 4
#define DWV 8
#define DWR 4
#include "dwconv_ukernel.template.h"


/* Portable 8x8 f32 / 4x4 f64 transposes: dst[c*dst_ld + r] = src[r*src_ld + c]. */
void transpose_f32_8x8_generic(const float *src, size_t src_ld, float *dst, size_t dst_ld)
{
    for (size_t r = 0; r < 8; r++)
        for (size_t c = 0; c < 8; c++)
            dst[c * dst_ld + r] = src[r * src_ld + c];
}

void transpose_f64_4x4_generic(const double *src, size_t src_ld, double *dst, size_t dst_ld)
{
    for (size_t r = 0; r < 4; r++)
        for (size_t c = 0; c < 4; c++)
            dst[c * dst_ld + r] = src[r * src_ld + c];
}

#if defined(__x86_64__) || defined(_M_X64)   /* SSE2: on every x86-64 */
#include <immintrin.h>
#define SC_LINE(d, s)                                                                      \
    for (int i_ = 0; i_ < 64; i_ += 16)                                                      \
        _mm_stream_ps((float *)((d) + i_), _mm_loadu_ps((const float *)((s) + i_)))
#else
#define SC_LINE(d, s) memcpy(d, s, 64)
#endif
#define SC_NAME stream_copy_generic
#include "stream_copy.template.h"
