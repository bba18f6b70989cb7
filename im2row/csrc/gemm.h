/* GEMM microkernels: C[mr x nr] (+)= A[mr x kc] * B[kc x NR], one register tile per call
 * (the plain form: any mr, as consecutive tiles of MR rows).
 *
 * A: rows read in place, row i at a + i*lda, kc contiguous values (a strip row, an im2row
 *    buffer row or an NHWC pixel); rows past mr are not read (they alias row mr-1).
 * B: a packed panel, kc rows of NR contiguous values (zero beyond the real columns).
 * C: row i at c + i*ldc, nr <= NR contiguous values; only nr columns and mr rows are stored
 *    (mr <= MR but in the plain form).
 * flags: GEMM_ACCUMULATE adds to C (later K blocks); GEMM_EPILOGUE (the last K block) adds
 *    bias[0:NR] when bias is not NULL (with GEMM_ROW_BIAS bias[i] to row i < mr instead: the
 *    W*X form, rows are output channels), then applies max(., 0) if GEMM_RELU is set; with
 *    GEMM_STREAM its full, vector-aligned stores bypass the caches (non-temporal: for results
 *    too large to stay cached; the caller fences before they are read).
 * Names: gemm_<dtype>_<MR>x<NR>_<isa>, and <name>_segs for the segmented form (below). Every
 * kernel is one source, gemm_ukernel.template.h, instantiated per dtype and ISA by the
 * gemm_<isa>.c files.
 */
#ifndef IM2ROW_GEMM_H
#define IM2ROW_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "i2r.h"

enum { GEMM_ACCUMULATE = 1, GEMM_EPILOGUE = 2, GEMM_RELU = 4, GEMM_STREAM = 8,
       GEMM_ROW_BIAS = 16 };

typedef void (*gemm_f32_fn)(size_t mr, size_t nr, size_t kc, const float *a, size_t lda,
                            const float *b, float *c, size_t ldc, const float *bias, int flags);
typedef void (*gemm_f64_fn)(size_t mr, size_t nr, size_t kc, const double *a, size_t lda,
                            const double *b, double *c, size_t ldc, const double *bias,
                            int flags);

/* The segmented form (<name>_segs): K walked as nseg segments, segment s multiplying A values
 * [seg[s].a, + seg[s].len) of each row with B rows [seg[s].b, + seg[s].len), in order, the
 * accumulators kept in registers from one to the next (the strip's K runs: its taps in
 * rotated slots and without the padding's). One segment {0, 0, kc} is the plain form. */
typedef struct { size_t a, b, len; } gemm_seg;
#define GEMM_SEGS_ARGS(T) size_t mr, size_t nr, size_t nseg, const gemm_seg *seg, const T *a, \
                          size_t lda, const T *b, T *c, size_t ldc, const T *bias, int flags
typedef void (*gemm_segs_f32_fn)(GEMM_SEGS_ARGS(float));
typedef void (*gemm_segs_f64_fn)(GEMM_SEGS_ARGS(double));
#define GEMM_SEGS_NAME_(name) name##_segs
#define GEMM_SEGS_NAME(name) GEMM_SEGS_NAME_(name)

/* The deferred form (<name>_deferred), for one-off calls that pack their weights inside the
 * GEMM (I2R_PACK_DEFERRED). With bsrc, B is read from weight rows in the caller's layout (row
 * k at bsrc + k*ldb, nr values) instead of a packed panel, each row also stored into the panel
 * at b (kc x NR, zero past nr) for the row tiles after it: the weights are packed by the first
 * tile that multiplies them, its loads hidden behind its FMAs. Without bsrc, B is the panel b,
 * as in the plain form. pf (or NULL): weight lines to prefetch as it goes (gemm_stream). */
#define GEMM_DEFERRED_ARGS(T) size_t mr, size_t nr, size_t kc, const T *a, size_t lda,    \
                              const T *bsrc, size_t ldb, T *b, T *c, size_t ldc,           \
                              const T *bias, int flags, const gemm_stream *pf
/* `left` cache lines from line `line` of the row at p on, rows of lines_per_row lines
 * row_stride bytes apart: per_k of them prefetched at each of the kernel's K steps, so that
 * the loads of weights still in memory spread over the FMAs instead of stalling in a burst. */
typedef struct {
    const char *p;
    size_t line, lines_per_row, row_stride, left, per_k;
} gemm_stream;
typedef void (*gemm_deferred_f32_fn)(GEMM_DEFERRED_ARGS(float));
typedef void (*gemm_deferred_f64_fn)(GEMM_DEFERRED_ARGS(double));
#define GEMM_DEFERRED_NAME_(name) name##_deferred
#define GEMM_DEFERRED_NAME(name) GEMM_DEFERRED_NAME_(name)
#define GEMM_BODY_NAME_(name) name##_body
#define GEMM_BODY_NAME(name) GEMM_BODY_NAME_(name)

/* Depthwise convolution of one output pixel over all channels (dwconv_ukernel.template.h). */
#define DWCONV_ARGS(T) size_t m, size_t channels, size_t nseg, size_t seg_taps, \
    size_t seg_stride, const T *a, size_t lda, const T *w, const T *bias, T *out, size_t ldo, \
    int relu
typedef void (*dwconv_f32_fn)(DWCONV_ARGS(float));
typedef void (*dwconv_f64_fn)(DWCONV_ARGS(double));
enum { DWCONV_ROWS = 4 };   /* output pixels one dwconv call computes at most (DWR) */

/* A depthwise convolution of one NCHW channel (dwconv_ukernel.template.h): its input is
 * copied into the zero-padded plane split by phase (below; the copy is the kernel's, so that
 * a stride-2 split runs in this ISA's vectors: 1.4x the layer speed of the driver's copy on 5x5
 * s2 672 ch at 28x28, Xeon model 207), then convolved. Phase plane (rp, cp), at
 * plane + (rp*sw + cp)*sub_rows*q, holds padded rows rp, rp + sh, ... and columns cp,
 * cp + sw, ..., q values a row: then tap (a, b) of the outputs [r*q + j] (j < ow; the others
 * are dropped) is one contiguous run of phase plane (a*dh % sh, b*dw % sw) from
 * (a*dh / sh)*q + b*dw / sw, whatever the stride and dilation. */
typedef struct {
    size_t w;                    /* the input channel's row length */
    size_t oh, ow, kh, kw, sh, sw, pt, pl;
    size_t in_rows, in_cols;     /* input rows and columns that the outputs read */
    size_t q, sub_rows;          /* values of a phase plane's row; its rows */
    size_t block_rows;           /* narrow maps: output rows convolved into `wide` at a time */
    const size_t *tap_offset;    /* kh*kw: where tap (a, b)'s run starts, from plane (above) */
} dwplane_geom;
/* Values the kernels may read or write past a phase plane's end and past `wide`'s block: one
 * step of their vector loop (scratch is sized for this many bytes more). */
enum { DWPLANE_OVERRUN_BYTES = 256 };
#define DWPLANE_ARGS(T) const dwplane_geom *pg, const T *x, T *plane, T *wide, const T *w, \
    T bias, T *out, int relu
typedef void (*dwplane_f32_fn)(DWPLANE_ARGS(float));
typedef void (*dwplane_f64_fn)(DWPLANE_ARGS(double));

/* One output row of a depthwise convolution from its kernel rows' padded input rows, both
 * NHWC-ordered (dwconv_ukernel.template.h). */
#define DWROW_ARGS(T) size_t ow, size_t channels, size_t kh, size_t kw, size_t sw, size_t dw, \
    const T *const *rows, const T *w, const T *bias, T *out, int relu
typedef void (*dwrow_f32_fn)(DWROW_ARGS(float));
typedef void (*dwrow_f64_fn)(DWROW_ARGS(double));

/* Winograd tile transforms of F(2x2, 3x3) and F(4x4, 3x3) (winograd_ukernel.template.h). */
#define WINO_IN_ARGS(T) int tile, size_t n, const T *const *px, T *restrict v, size_t vstride
#define WINO_OUT_ARGS(T) int tile, size_t n, const T *mm, size_t mstride, const T *bias, \
    int relu, T *const *py
typedef void (*wino_in_f32_fn)(WINO_IN_ARGS(float));
typedef void (*wino_in_f64_fn)(WINO_IN_ARGS(double));
typedef void (*wino_out_f32_fn)(WINO_OUT_ARGS(float));
typedef void (*wino_out_f64_fn)(WINO_OUT_ARGS(double));
#define WINO_W_ARGS(T) int tile, size_t n, const T *const *taps, T *u, size_t ustride
typedef void (*wino_w_f32_fn)(WINO_W_ARGS(float));
typedef void (*wino_w_f64_fn)(WINO_W_ARGS(double));

/* dst[c*dst_ld + r] = src[r*src_ld + c] for one tr x tr tile (NCHW <-> NHWC-ordered data). */
typedef void (*transpose_f32_fn)(const float *src, size_t src_ld, float *dst, size_t dst_ld);
typedef void (*transpose_f64_fn)(const double *src, size_t src_ld, double *dst,
                                 size_t dst_ld);

/* memcpy streaming the destination's whole 64-byte lines past the caches, storing its
 * partial first and last lines plainly (stream_copy.template.h). */
typedef void (*stream_copy_fn)(void *dst, const void *src, size_t bytes);

/* The kernels of one ISA level for one dtype, chosen at run time (cpu_dispatch.c). */
#define KERNEL_TABLE(T, SFX)                                                                \
    typedef struct {                                                                        \
        int mr, nr;                      /* register tile of the GEMM */                    \
        int tr;                          /* tile of the transpose */                        \
        gemm_##SFX##_fn gemm;                                                               \
        gemm_segs_##SFX##_fn gemm_segs;                                                     \
        gemm_deferred_##SFX##_fn gemm_deferred;                                             \
        dwconv_##SFX##_fn dwconv;                                                           \
        dwplane_##SFX##_fn dwplane;                                                         \
        dwrow_##SFX##_fn dwrow;                                                             \
        transpose_##SFX##_fn transpose;                                                     \
        stream_copy_fn stream_copy;                                                         \
        wino_in_##SFX##_fn wino_in;                                                         \
        wino_out_##SFX##_fn wino_out;                                                       \
        wino_w_##SFX##_fn wino_w;                                                           \
    } kernels_##SFX;                                                                        \
    kernels_##SFX select_kernels_##SFX(i2r_isa isa);
KERNEL_TABLE(float, f32)
KERNEL_TABLE(double, f64)
#undef KERNEL_TABLE

#define TRANSPOSE_DECLARE(name, T) \
    void name(const T *src, size_t src_ld, T *dst, size_t dst_ld)
TRANSPOSE_DECLARE(transpose_f32_8x8_generic, float);
TRANSPOSE_DECLARE(transpose_f64_4x4_generic, double);
void stream_copy_generic(void *dst, const void *src, size_t bytes);

#define GEMM_DECLARE(name, T) \
    void name(size_t mr, size_t nr, size_t kc, const T *a, size_t lda, const T *b, T *c, \
              size_t ldc, const T *bias, int flags); \
    void name##_segs(GEMM_SEGS_ARGS(T)); \
    void name##_deferred(GEMM_DEFERRED_ARGS(T))
#define DWCONV_DECLARE(name, T) void name(DWCONV_ARGS(T))
#define WINO_DECLARE(isa, T, SFX) \
    void wino_in_##SFX##_##isa(WINO_IN_ARGS(T)); void wino_out_##SFX##_##isa(WINO_OUT_ARGS(T)); \
    void wino_w_##SFX##_##isa(WINO_W_ARGS(T))
WINO_DECLARE(generic, float, f32);
WINO_DECLARE(generic, double, f64);
GEMM_DECLARE(gemm_f32_4x16_generic, float);
#define DWPLANE_DECLARE(name, T) void name(DWPLANE_ARGS(T))
DWCONV_DECLARE(dwconv_f32_generic, float);
DWCONV_DECLARE(dwconv_f64_generic, double);
DWPLANE_DECLARE(dwplane_f32_generic, float);
DWPLANE_DECLARE(dwplane_f64_generic, double);
#define DWROW_DECLARE(name, T) void name(DWROW_ARGS(T))
DWROW_DECLARE(dwrow_f32_generic, float);
DWROW_DECLARE(dwrow_f64_generic, double);
GEMM_DECLARE(gemm_f64_4x8_generic, double);
#if defined(__x86_64__) && defined(__GNUC__)
#define I2R_X86 1
GEMM_DECLARE(gemm_f32_6x16_avx2, float);
GEMM_DECLARE(gemm_f64_6x8_avx2, double);
GEMM_DECLARE(gemm_f32_14x32_avx512, float);
GEMM_DECLARE(gemm_f64_14x16_avx512, double);
DWCONV_DECLARE(dwconv_f32_avx2, float);
DWPLANE_DECLARE(dwplane_f32_avx2, float);
DWPLANE_DECLARE(dwplane_f64_avx2, double);
DWPLANE_DECLARE(dwplane_f32_avx512, float);
DWPLANE_DECLARE(dwplane_f64_avx512, double);
DWROW_DECLARE(dwrow_f32_avx2, float);
DWROW_DECLARE(dwrow_f64_avx2, double);
DWROW_DECLARE(dwrow_f32_avx512, float);
DWROW_DECLARE(dwrow_f64_avx512, double);
TRANSPOSE_DECLARE(transpose_f32_8x8_avx2, float);
TRANSPOSE_DECLARE(transpose_f64_4x4_avx2, double);
void stream_copy_avx2(void *dst, const void *src, size_t bytes);
void stream_copy_avx512(void *dst, const void *src, size_t bytes);
DWCONV_DECLARE(dwconv_f64_avx2, double);
DWCONV_DECLARE(dwconv_f32_avx512, float);
DWCONV_DECLARE(dwconv_f64_avx512, double);
WINO_DECLARE(avx2, float, f32);
WINO_DECLARE(avx2, double, f64);
WINO_DECLARE(avx512, float, f32);
WINO_DECLARE(avx512, double, f64);
#endif

#endif
