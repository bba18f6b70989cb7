/* The C surface of im2row's kernels: no Python here (the Cython glue in _native.pyx calls it).
 *
 * Conventions
 * - Arrays are C-contiguous. An input is NCHW (N, C, H, W) or NHWC (N, H, W, C); an output is
 *   NCHW (N, OC, OH, OW) or NHWC (N, OH, OW, OC), chosen by i2r_geom.nhwc for both.
 * - Weights are read in place, either layout: element (group g, kh, kw, channel c of the
 *   group, output channel oc of the group) at wm[g*s[0] + kh*s[1] + kw*s[2] + c*s[3] + oc*s[4]]
 *   (s = wstride, in elements). i2r_pack_weights packs them once into NR-wide panels, one copy
 *   per strip rotation (see conv.c).
 * - Sizes are int64_t; the Python layer has already checked every size and byte count.
 * - Functions return an i2r_status; they never print, never abort, never touch Python objects,
 *   and may run without the GIL.
 */
#ifndef IM2ROW_I2R_H
#define IM2ROW_I2R_H

#include <stddef.h>
#include <stdint.h>

/* I2R_ETOOBIG: a buffer of the call would need 2**62 bytes or more (nothing was run). */
typedef enum { I2R_OK = 0, I2R_ENOMEM = 1, I2R_EINVAL = 2, I2R_ETOOBIG = 3 } i2r_status;
typedef enum { I2R_ISA_GENERIC = 0, I2R_ISA_AVX2 = 1, I2R_ISA_AVX512 = 2 } i2r_isa;
typedef enum { I2R_F32 = 0, I2R_F64 = 1 } i2r_dtype;
/* I2R_STRIP: the reusable im2row strip, one GEMM per output column.
 * I2R_FULL: the traditional im2row matrix, one GEMM per image (small images stacked) and
 * group. I2R_BLOCKED: the same GEMM, but each MC x KC block of the im2row matrix is lowered
 * just before the GEMM uses it, so the matrix never exists whole. Both run 1x1 stride-1
 * unpadded convolutions as a GEMM on the input itself (NHWC) or on its pixels (NCHW). */
typedef enum { I2R_STRIP = 0, I2R_FULL = 1, I2R_BLOCKED = 2 } i2r_method;

typedef struct {
    int64_t n, c, h, w;        /* input */
    int64_t oc, kh, kw, groups;
    int64_t sh, sw, dh, dw;    /* stride, dilation */
    int64_t pt, pb, pl, pr;    /* padding: top, bottom, left, right */
    int64_t oh, ow;            /* output */
    int nhwc;                  /* 1: NHWC input and output, 0: NCHW */
    int64_t ow0;               /* I2R_STRIP: global index of this call's output column 0 when
                                  the call computes a window of a larger output (0 otherwise):
                                  the strip rotation of a column follows its global index, so a
                                  window's columns are summed exactly as in the whole call */
} i2r_geom;

/* What one call allocates and writes (i2r_predict computes it; i2r_conv reports it). */
typedef struct {
    int64_t workspace_bytes;   /* scratch of all threads */
    int64_t copied_values;     /* values written into strips or im2row buffers */
    int64_t threads;           /* threads that ran */
    int64_t packed_bytes;      /* packed weights and bias (i2r_predict only) */
} i2r_stats;

typedef struct i2r_weights i2r_weights;   /* opaque */

/* What i2r_pack_weights packs besides the unrotated panels every method can run with. */
enum {
    I2R_PACK_ROTATIONS = 1,   /* a copy per strip rotation: I2R_STRIP then writes only the new
                                 columns at each step (without, it refills every slot) */
    I2R_PACK_ROWS_ONLY = 2,   /* OIHW weights: no panels, only what I2R_BLOCKED on NCHW runs
                                 with (the weights themselves, read in place; a call that
                                 needs the panels then fails with I2R_EINVAL) */
    I2R_PACK_DEFERRED = 4     /* HWIO weights (NHWC): no panels; I2R_FULL and I2R_BLOCKED read
                                 the weights in place and pack each K block of a panel into
                                 their scratch just before the GEMM uses it (one pass over the
                                 weights instead of three, for a one-off call with few
                                 pixels; I2R_STRIP then fails with I2R_EINVAL). Ignored for
                                 other weights (packed as without it). */
};

/* Pack wm (strides wstride, see above) and an optional bias[OC] for one dtype and ISA level,
 * with up to nthreads threads; flags as above. relu fuses max(x, 0) into the epilogue. *out is
 * freed with i2r_free_weights. C-contiguous OIHW weights, and HWIO ones packed with
 * I2R_PACK_DEFERRED, are also read in place by later calls: they must stay alive and
 * unchanged as long as *out. */
i2r_status i2r_pack_weights(i2r_dtype dtype, i2r_isa isa, const void *wm,
                            const int64_t wstride[5], const void *bias,
                            int64_t groups, int64_t kh, int64_t kw, int64_t cg, int64_t ocg,
                            int64_t sw, int64_t dw, int flags, int relu, int nthreads,
                            i2r_weights **out);
void i2r_free_weights(i2r_weights *w);
int64_t i2r_packed_bytes(const i2r_weights *w);
/* 1 if I2R_STRIP gets all it can use from w: packed with I2R_PACK_ROTATIONS, or a layout that
 * needs no rotated copies (one copy walked in tap order). */
int i2r_rotations_ready(const i2r_weights *w);
/* The flags a one-off call of `method` on this geometry packs its weights with: what it
 * needs, nothing more, and I2R_PACK_DEFERRED where that is faster than packing first. */
int i2r_pack_flags(i2r_dtype dtype, i2r_isa isa, i2r_method method, const i2r_geom *g);

/* Scratch, copy counts and packed-weight bytes of one i2r_conv call with weights packed with
 * pack_flags, without weights and without running it (the same work split as i2r_conv
 * computes them); I2R_ETOOBIG when one of them reaches 2**62 bytes (the counts are then
 * saturated there). */
i2r_status i2r_predict(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, i2r_method method,
                       int nthreads, int pack_flags, int with_bias, i2r_stats *stats);

/* The method "auto" runs for this geometry (the planner's rule; see plan.c). */
i2r_method i2r_choose_method(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g);

/* 1 if I2R_STRIP and I2R_BLOCKED sum every output's products in the same order here (NHWC,
 * one packed copy walked in tap order: not depthwise, enough channels), so that either gives
 * the same bits (what lets a plan time them against each other). */
int i2r_one_sum_order(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g);

/* y = conv(x, w): x and y as in the conventions above, y never aliasing x. flags:
 * I2R_RUN_DEBUG_NAN fills scratch with NaN first so that a read of an unwritten value shows
 * in y; I2R_RUN_PLAIN_STORES stores results plainly where the planner would stream them past
 * the caches (i2r_streams_results; the same bits either way, only faster or slower: which
 * is faster depends on the machine). */
enum { I2R_RUN_DEBUG_NAN = 1, I2R_RUN_PLAIN_STORES = 2 };
i2r_status i2r_conv(const i2r_weights *w, const i2r_geom *g, i2r_method method, int nthreads,
                    int flags, const void *x, void *y, i2r_stats *stats);
/* Whether i2r_conv with these arguments streams its results past the caches (results of few
 * products each, too large for the caches); 0 on arguments i2r_conv would refuse. */
int i2r_streams_results(const i2r_weights *w, const i2r_geom *g, i2r_method method,
                        int nthreads);

/* The weight gradient of the convolution y = conv(x, w) of geometry g, from dy (shaped as y):
 * dw in the layout's weight order, C-contiguous: NCHW (OC, C/groups, KH, KW), NHWC (KH, KW,
 * C/groups, OC); every element written. Each element is summed over the batch's pixels in one
 * order whatever nthreads is. i2r_predict_grad_weight: its scratch without running it. */
i2r_status i2r_grad_weight(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int nthreads,
                           const void *x, const void *dy, void *dw, i2r_stats *stats);
i2r_status i2r_predict_grad_weight(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g,
                                   int nthreads, i2r_stats *stats);

/* dx = the input gradient of the NHWC convolution g given dy (= the transposed convolution of
 * dy with w), in scatter form: w HWIO, C-contiguous; every element of dx written; g->pb and
 * g->pr are not used (they may be negative: output_padding). i2r_transpose_scatter_preferred
 * (g->nhwc: the caller's layout) says where it beats the phase split: few input channels per
 * group (the phase GEMMs would fill few columns) and NHWC depthwise layers. */
i2r_status i2r_transpose_scatter(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int nthreads,
                                 const void *dy, const void *w, void *dx);
int i2r_transpose_scatter_preferred(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g);

/* Winograd's minimal filtering F(m x m, 3x3), m = 2 or 4 (winograd.c), for 3x3 stride-1
 * undilated convolutions (groups allowed): fewer multiplications than any direct method, at
 * the price of rounding error (F(4x4) more than F(2x2)).
 * i2r_winograd_tile: the tile size for g (the cheaper by the planner's cost; ties go to 2),
 * 0 where Winograd does not apply. i2r_winograd_preferred: whether "auto", allowed to, runs
 * Winograd on g (faster than the exact methods by that cost; one_shot: the weights are
 * transformed for this one call). i2r_winograd_pack: transform and pack weights (as
 * i2r_pack_weights) for one tile size; the weights are not read after it returns.
 * i2r_winograd_predict: a call's scratch, packed bytes and values transformed, without
 * running it. i2r_winograd_conv: y = conv(x, w) as i2r_conv does, g's geometry checked
 * against w's; every pixel's result is the same whatever nthreads is. */
typedef struct i2r_winograd i2r_winograd;   /* opaque */
int i2r_winograd_tile(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g);
int i2r_winograd_preferred(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int one_shot);
i2r_status i2r_winograd_pack(i2r_dtype dtype, i2r_isa isa, int tile, const void *wm,
                             const int64_t wstride[5], const void *bias, int64_t groups,
                             int64_t cg, int64_t ocg, int relu, int nthreads,
                             i2r_winograd **out);
void i2r_winograd_free(i2r_winograd *w);
int64_t i2r_winograd_packed_bytes(const i2r_winograd *w);
i2r_status i2r_winograd_predict(i2r_dtype dtype, i2r_isa isa, int tile, const i2r_geom *g,
                                int nthreads, int with_bias, i2r_stats *stats);
i2r_status i2r_winograd_conv(const i2r_winograd *w, const i2r_geom *g, int nthreads,
                             int debug_nan, const void *x, void *y, i2r_stats *stats);

/* Free the large blocks kept for reuse by later calls (see buffers.c). */
void i2r_release_buffers(void);

/* The best ISA level this CPU supports (the GEMM microkernels chosen at run time). */
i2r_isa i2r_cpu_isa(void);
/* 1 if built with OpenMP; the threads an i2r_conv call may use at most. */
int i2r_have_openmp(void);
int i2r_max_threads(void);

#endif
