/* The blocked GEMM over the microkernels, and the copies and transposes every method uses. Included by conv.c per dtype (T and SFX defined; see driver.h). */
/* Copies of a few channels are frequent (one per strip row, one per im2row tap): below 16
 * values a plain loop beats a call to memcpy/memset (setup.py's -fno-tree-loop-distribute-
 * patterns keeps gcc from turning the loop back into that call). */
static inline void FN(copy_channels)(T *dst, const T *src, int64_t n)
{
    if (n >= 16) {
        memcpy(dst, src, (size_t)n * sizeof(T));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = src[i];
}

/* `rows` runs of n values, the r-th from src + r*src_stride to dst + r*dst_stride (a strip
 * slot down the strip's rows). A run of a few channels (RGB, RGBA, grey) is a couple of moves
 * when its length is a constant: the switch gives each such length its own loop, where the
 * loop in copy_channels tested the count for every value (17% of a 3->32 stem's time). */
static inline void FN(copy_channel_rows)(T *dst, int64_t dst_stride, const T *src,
                                         int64_t src_stride, int64_t rows, int64_t n)
{
    switch (n) {
#define COPY_ROWS(N)                                                                         \
    case N:                                                                                \
        for (int64_t r = 0; r < rows; r++)                                                 \
            memcpy(dst + r * dst_stride, src + r * src_stride, N * sizeof(T));             \
        return;
    COPY_ROWS(1) COPY_ROWS(2) COPY_ROWS(3) COPY_ROWS(4)
    COPY_ROWS(6) COPY_ROWS(8) COPY_ROWS(12)
#undef COPY_ROWS
    default:
        for (int64_t r = 0; r < rows; r++)
            FN(copy_channels)(dst + r * dst_stride, src + r * src_stride, n);
    }
}

static inline void FN(zero_channels)(T *dst, int64_t n)
{
    if (n >= 16) {
        memset(dst, 0, (size_t)n * sizeof(T));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = (T)0;
}


/* dst[m] = src[m*step] for m < n (the buffers do not overlap); steps 1 and 2 spelled out,
 * so that the compiler vectorises them. */
static void FN(copy_strided)(T *restrict dst, const T *restrict src, int64_t n, int64_t step)
{
    if (step == 1) {
        FN(copy_channels)(dst, src, n);
    } else if (step == 2) {
        for (int64_t m = 0; m < n; m++)
            dst[m] = src[2 * m];
    } else {
        for (int64_t m = 0; m < n; m++)
            dst[m] = src[m * step];
    }
}

/* Where I2R_BLOCKED lowers from: element (image n, row h, column col, channel c of the
 * group) at base + (n - n_first)*img + h*hs + col*ws + c; the A blocks go to abuf. Without
 * a base, A is given but its rows lie a multiple of 4 KiB apart (a_row_stride): each A block
 * is copied into abuf, whose rows do not. */
typedef struct {
    const T *base;
    int64_t n_first, img, hs, ws;
    T *abuf;
} FN(lowering);


static void FN(lower_block)(const i2r_layout *L, const i2r_geom *g, const FN(lowering) *src,
                            int64_t p0, int64_t mc, int64_t k0, int64_t kc, int64_t lda, T *a);

/* Deferred weights: the lines of the next K block's weight rows (rows [k1, k1 + kn) at
 * rows + r*ld, each the columns of panels [pa, pb)) that tile t of the `tiles` of this
 * block's first row block prefetches as it multiplies (gemm_stream), so that the tiles
 * packing the next block read the cache and its loads overlap the FMAs of every tile of this
 * one. Issued in bursts, once per panel, the same prefetches stalled the FMAs behind them and
 * the packing tiles still waited on memory (75% of their samples on the weight loads). */
static const gemm_stream *FN(next_block_stream)(const T *rows, int64_t ld, int64_t pa,
                                                int64_t pb, int64_t ncols, int64_t nr,
                                                int64_t k1, int64_t kn, int64_t t,
                                                int64_t tiles, int64_t kc, gemm_stream *s)
{
    const uintptr_t first = (uintptr_t)(rows + k1 * ld + pa * nr) & ~(uintptr_t)63;
    const uintptr_t end = (uintptr_t)(rows + k1 * ld + min64(ncols, pb * nr)) + 63;
    const int64_t per_row = (int64_t)((end & ~(uintptr_t)63) - first) / 64;
    const int64_t lines = per_row * kn, share = cdiv(lines, tiles);
    const int64_t l0 = min64(lines, t * share), l1 = min64(lines, l0 + share);
    if (l1 <= l0 || kc <= 0)
        return NULL;
    s->p = (const char *)first + (l0 / per_row) * ld * (int64_t)sizeof(T);
    s->line = (size_t)(l0 % per_row);
    s->lines_per_row = (size_t)per_row;
    s->row_stride = (size_t)ld * sizeof(T);
    s->left = (size_t)(l1 - l0);
    s->per_k = (size_t)cdiv(l1 - l0, kc);
    return s;
}

/* gemm_blocked for K runs shorter than a K block on average (the strip's on 32-128 channels,
 * strip_runs), A and B in place: the runs are cut into K blocks of k_block(their total)
 * values, a block being the segments of one or more runs that the microkernel walks with its
 * accumulators in registers, where a pass per run stored and reloaded the register tile for
 * every run of 32-128 values. The same products in the same order. Measured (Zen 4, 1
 * thread, NHWC strip, ms): 3x3 32->64 at 112x112 5.89 -> 5.13, 64->64 at 56x56 2.46 -> 2.30,
 * 64->64 at 224x224 41.6 -> 39.3, 5x5 48->64 at 56x56 5.00 -> 4.84; runs of 256+ values
 * (512 channels) keep a pass per run (there the segments measured 2-5% slower). */
static void FN(gemm_segmented)(const struct i2r_weights *w, int64_t M, const T *a,
                               int64_t lda, const k_run *runs, int64_t nruns, const T *bpack,
                               const T *bias, T *c, int64_t ldc, int64_t pa, int64_t pb,
                               int64_t ncols, int cflags, int64_t total)
{
    const i2r_layout *L = &w->L;
    const KFN(gemm_segs) ukernel = L->FN(k).gemm_segs;
    const int64_t MR = L->mr, NR = L->nr, K = L->k, MC = L->mr * MC_TILES;
    const int64_t kcs = k_block(total);   /* total: the runs' values */
    gemm_seg seg[GEMM_MAX_SEGS];
    for (int64_t s = 0, off = 0, done = 0; s < nruns;) {
        int64_t nseg = 0, kc = 0;   /* the next block: segments of runs s, s+1, ... */
        while (s < nruns && kc < kcs) {
            const int64_t take = min64(runs[s].len - off, kcs - kc);
            seg[nseg++] = (gemm_seg){(size_t)(runs[s].a + off), (size_t)(runs[s].b + off),
                                     (size_t)take};
            kc += take;
            off += take;
            if (off == runs[s].len) { s++; off = 0; }
        }
        const int first = done == 0, last = s == nruns;
        done += kc;
        const int flags = (first ? cflags & GEMM_ACCUMULATE : GEMM_ACCUMULATE) |
                          (last ? GEMM_EPILOGUE | (w->relu ? GEMM_RELU : 0) |
                                  (cflags & GEMM_STREAM) : 0) | (cflags & GEMM_ROW_BIAS);
        for (int64_t m0 = 0; m0 < M; m0 += MC) {
            const int64_t mc = min64(M - m0, MC);
            for (int64_t p = pa; p < pb; p++) {
                const int64_t nr = min64(ncols - p * NR, NR);
                const T *bb = bias ? bias + p * NR : NULL;
                for (int64_t i = 0; i < mc; i += MR) {
                    if (bias && (cflags & GEMM_ROW_BIAS))
                        bb = bias + m0 + i;
                    ukernel((size_t)min64(mc - i, MR), (size_t)nr, (size_t)nseg, seg,
                            a + (m0 + i) * lda, (size_t)lda, bpack + p * K * NR,
                            c + (m0 + i) * ldc + p * NR, (size_t)ldc, bb, flags);
                }
            }
        }
    }
}

/* C[M x OCg] = A[M x K] * B (+ bias, ReLU): A rows at a + i*lda, B the packed panels. K is
 * walked as nruns runs (see k_run): run r multiplies A values [a + run.a, + run.len) of each
 * row with weight rows [run.b, + run.len), in order, so that the sum over K runs in the order
 * the runs give; with rows (else NULL), run r only rows rows[r] (strip_runs, blocked_runs
 * leave out what reads padding). Only the columns of weight panels [pa, pb) of ncols (OCg).
 * cflags: GEMM_ACCUMULATE adds to C from the first K block on (C prefilled); GEMM_STREAM
 * streams the final stores past the caches; GEMM_ROW_BIAS: bias[i] belongs to row i (W*X
 * form). With `low` (I2R_BLOCKED) A is not given: each A block is lowered from low->base
 * (rows from pixel low_p0 on) into low->abuf just before it is used, so the im2row matrix
 * never exists whole (one run of all K, or blocked_runs': a run per kernel row, over the
 * rows it reaches; A blocks and deferred weight blocks then of at most k_block(K) values,
 * run_k_block). Blocked as in BLIS: K blocks of <= KC values inside a run (outermost: the
 * K block of all weight panels stays in L2 while every row block passes), M blocks of
 * MC_TILES register tiles (A block in L1/L2, reused by every panel), then NR panels and MR
 * tiles; the register tile accumulates in C across K blocks and runs. With bbuf (deferred
 * weights, NHWC "blocked"), bpack is the group's HWIO rows instead: the panels are taken
 * deferred_panels at a time, and each K block of a panel is packed into bbuf by the first
 * row tile that multiplies it (the deferred form of the microkernel, its loads overlapping
 * its FMAs), the other tiles reading bbuf; meanwhile every tile of the first row block
 * prefetches its share of the next K block (of its run, the next run, or the next block of
 * panels: next_block_stream). A separate packing pass before the tiles, as a BLIS GEMM packs
 * B, stalled on memory: 32% of a one-off 512->512 3x3 at 7x7 (perf, Zen 3); on Zen 4, row by
 * row in memory order, it took 0.75-0.80x the time of the old tile packing (bursts of
 * prefetches) with the weights in memory but 1.03-1.15x with them in the L3. */
static void FN(gemm_panel_block)(const struct i2r_weights *w, int64_t M, const T *a,
                                 int64_t lda, const k_run *runs, const row_range *rows,
                                 int64_t nruns,
                                 const T *bpack, const T *bias, T *c, int64_t ldc, int64_t pa,
                                 int64_t pb, int64_t pn, int64_t ncols, int cflags,
                                 const i2r_geom *g, const FN(lowering) *low, int64_t low_p0,
                                 T *bbuf);

static void FN(gemm_blocked)(const struct i2r_weights *w, int64_t M, const T *a, int64_t lda,
                             const k_run *runs, const row_range *rows, int64_t nruns,
                             const T *bpack, const T *bias,
                             T *c, int64_t ldc, int64_t pa, int64_t pb, int64_t ncols,
                             int cflags, const i2r_geom *g, const FN(lowering) *low,
                             int64_t low_p0, T *bbuf)
{
    const int64_t npb = bbuf ? deferred_panels(&w->L) : pb - pa;
    for (int64_t q = pa; q < pb; q += npb)
        FN(gemm_panel_block)(w, M, a, lda, runs, rows, nruns, bpack, bias, c, ldc, q,
                             min64(pb, q + npb), min64(pb, q + 2 * npb), ncols, cflags, g,
                             low, low_p0, bbuf);
}

/* Rows [r0, r1) of C, columns [c0, c1) given the microkernel's epilogue: bias, then ReLU as
 * V_MAX(0, x) (NaN stays). For the rows a strip GEMM's last K run leaves out. */
static void FN(finish_rows)(T *c, int64_t ldc, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                            const T *bias, int relu)
{
    for (int64_t i = r0; i < r1; i++)
        for (int64_t j = c0; j < c1; j++) {
            const T v = bias ? c[i * ldc + j] + bias[j] : c[i * ldc + j];
            c[i * ldc + j] = relu && (T)0 > v ? (T)0 : v;
        }
}

/* gemm_blocked on one block of panels [pa, pb); deferred weights are packed (and, from its
 * last K block, prefetched) next for panels [pb, pn). With rows (strip_runs, blocked_runs),
 * run s multiplies only rows rows[s]: the rows its first run leaves out (at the top:
 * kernel row 0 reaches the last row, else that row would be reached by none) start from zero,
 * those its last run leaves out (at the bottom) get their epilogue after the runs. */
static void FN(gemm_panel_block)(const struct i2r_weights *w, int64_t M, const T *a,
                                 int64_t lda, const k_run *runs, const row_range *rows,
                                 int64_t nruns, const T *bpack, const T *bias, T *c,
                                 int64_t ldc, int64_t pa, int64_t pb, int64_t pn, int64_t ncols,
                                 int cflags, const i2r_geom *g, const FN(lowering) *low,
                                 int64_t low_p0, T *bbuf)
{
    const i2r_layout *L = &w->L;
    const KFN(gemm) ukernel = L->FN(k).gemm;
    const KFN(gemm_deferred) deferred = L->FN(k).gemm_deferred;
    const int64_t MR = L->mr, NR = L->nr, K = L->k, MC = L->mr * MC_TILES;
    int64_t total = 0;
    for (int64_t s = 0; s < nruns; s++)
        total += runs[s].len;
    if (nruns > 1 && nruns <= GEMM_MAX_SEGS && total < nruns * KC && !low && !bbuf) {
        FN(gemm_segmented)(w, M, a, lda, runs, nruns, bpack, bias, c, ldc, pa, pb, ncols,
                           cflags, total);
        return;
    }
    const int64_t c0 = pa * NR, c1 = min64(ncols, pb * NR);
    if (rows && !(cflags & GEMM_ACCUMULATE))   /* (the first run reaches the last row) */
        for (int64_t i = 0; i < rows[0].lo; i++)
            FN(zero_channels)(c + i * ldc + c0, c1 - c0);
    for (int64_t s = 0; s < nruns; s++) {
        const k_run run = runs[s];
        const int64_t kcs = run_k_block(L, run.len, low || bbuf);
        const int64_t r0 = rows ? rows[s].lo : 0, r1 = rows ? rows[s].hi : M;
        for (int64_t k0 = 0; k0 < run.len; k0 += kcs) {
            int64_t kc = min64(run.len - k0, kcs);
            int first = s == 0 && k0 == 0, last = s == nruns - 1 && k0 + kc == run.len;
            int flags = (first ? cflags & GEMM_ACCUMULATE : GEMM_ACCUMULATE) |
                        (last ? GEMM_EPILOGUE | (w->relu ? GEMM_RELU : 0) |
                                (cflags & GEMM_STREAM) : 0);
            for (int64_t m0 = r0; m0 < r1; m0 += MC) {
                int64_t mc = min64(r1 - m0, MC);
                const T *ablk = low && low->base ? NULL : a + m0 * lda + run.a + k0;
                int64_t ald = lda;
                if (low) {   /* I2R_BLOCKED: lower this A block now, into the cache */
                    ald = a_row_stride(kc, (int64_t)sizeof(T));
                    if (low->base)
                        FN(lower_block)(L, g, low, low_p0 + m0, mc, run.a + k0, kc, ald,
                                        low->abuf);
                    else
                        for (int64_t i = 0; i < mc; i++)
                            FN(copy_channels)(low->abuf + i * ald, ablk + i * lda, kc);
                    ablk = low->abuf;
                }
                const int64_t tiles = (pb - pa) * cdiv(mc, MR);   /* of this row block */
                for (int64_t p = pa; p < pb; p++) {
                    int64_t nr = min64(ncols - p * NR, NR);
                    const T *bp = bbuf ? bbuf + (p - pa) * kc * NR
                                       : bpack + p * K * NR + (run.b + k0) * NR;
                    const T *bb = bias ? bias + p * NR : NULL;
                    const int tflags = flags | (cflags & GEMM_ROW_BIAS);
                    if (bias && (cflags & GEMM_ROW_BIAS))
                        bb = bias + m0;
                    if (!(bbuf && m0 == r0)) {   /* the block's row tiles in one call */
                        ukernel((size_t)mc, (size_t)nr, (size_t)kc, ablk, (size_t)ald, bp,
                                c + m0 * ldc + p * NR, (size_t)ldc, bb, tflags);
                        continue;
                    }
                    for (int64_t i = 0; i < mc; i += MR) {   /* the first tiles pack panel p */
                        int64_t mr = min64(mc - i, MR);
                        T *ct = c + (m0 + i) * ldc + p * NR;
                        if (bias && (cflags & GEMM_ROW_BIAS))
                            bb = bias + m0 + i;
                        /* next: this run's K block after this one, else the next run's
                         * first, else the first of the next block of panels */
                        const int more = k0 + kc < run.len, same = more || s + 1 < nruns;
                        const k_run next = more ? run : runs[same ? s + 1 : 0];
                        const int64_t nk0 = more ? k0 + kc : 0;
                        gemm_stream st;
                        const gemm_stream *pf = same || pn > pb
                            ? FN(next_block_stream)(bpack, w->hwio_ld, same ? pa : pb,
                                                    same ? pb : pn, ncols, NR, next.b + nk0,
                                                    min64(next.len - nk0,
                                                          run_k_block(L, next.len, 1)),
                                                    (p - pa) * cdiv(mc, MR) + i / MR, tiles, kc,
                                                    &st)
                            : NULL;
                        T *panel = bbuf + (p - pa) * kc * NR;
                        deferred((size_t)mr, (size_t)nr, (size_t)kc, ablk + i * ald, (size_t)ald,
                                 i == 0 ? bpack + (run.b + k0) * w->hwio_ld + p * NR : NULL,
                                 (size_t)w->hwio_ld, panel, ct, (size_t)ldc, bb, tflags, pf);
                    }
                }
            }
        }
    }
    if (rows)   /* (the last run reaches the first row) */
        FN(finish_rows)(c, ldc, rows[nruns - 1].hi, M, c0, c1, bias, w->relu);
}

/* Depthwise counterpart of gemm_blocked: row i of C is the channel-wise product of the
 * KH*KW taps of A row i with the packed (taps, C) block bpack. The runs must be of equal
 * length and equally spaced in A, their weights consecutive (as strip_runs makes them). */
static void FN(dwconv_rows)(const struct i2r_weights *w, int64_t M, const T *a, int64_t lda,
                            const k_run *runs, int64_t nruns, const T *bpack, const T *bias,
                            T *c, int64_t ldc)
{
    const i2r_layout *L = &w->L;
    const KFN(dwconv) ukernel = L->FN(k).dwconv;
    const int64_t spacing = nruns > 1 ? runs[1].a - runs[0].a : 0;
    for (int64_t i = 0; i < M; i += DWCONV_ROWS)
        ukernel((size_t)min64(DWCONV_ROWS, M - i), (size_t)L->cg, (size_t)nruns,
                (size_t)(runs[0].len / L->cg), (size_t)spacing, a + i * lda + runs[0].a,
                (size_t)lda, bpack, bias, c + i * ldc, (size_t)ldc, w->relu);
}

/* C = A * packed weights (+ bias, ReLU), output channels of panels [pa, pb): the GEMM, or
 * its depthwise counterpart (always all channels: depthwise work is never split by panel;
 * cflags and bbuf, for deferred weights, go to the GEMM only). */
static void FN(multiply)(const struct i2r_weights *w, int64_t M, const T *a, int64_t lda,
                         const k_run *runs, const row_range *rows, int64_t nruns,
                         const T *bpack, const T *bias,
                         T *c, int64_t ldc, int64_t pa, int64_t pb, int cflags, T *bbuf)
{
    if (w->L.depthwise)
        FN(dwconv_rows)(w, M, a, lda, runs, nruns, bpack, bias, c, ldc);
    else
        FN(gemm_blocked)(w, M, a, lda, runs, rows, nruns, bpack, bias, c, ldc, pa, pb, w->L.ocg,
                         cflags, NULL, NULL, 0, bbuf);
}

/* dst[c*dst_ld + r*dst_step] = src[r*src_ld + c] for r < rows, c < cols: NCHW <-> NHWC-ordered
 * data. Whole tr x tr tiles go through the ISA's register transpose when dst_step is 1. The
 * tiles are walked along TR rows of the side whose rows lie farther apart (NCHW planes): TR
 * constant-stride streams, which the hardware prefetcher follows; across the other way each
 * tile touched a line of every plane (measured: NCHW depthwise 3x3 192 ch at 28x28 through
 * the ring, N=8, 1 thread, input transposed from memory, 1.32 -> 1.00 ms). */
static void FN(transpose)(const i2r_layout *L, const T *src, int64_t rows, int64_t cols,
                          int64_t src_ld, T *dst, int64_t dst_ld, int64_t dst_step)
{
    const KFN(transpose) tile = L->FN(k).transpose;
    const int64_t TR = L->FN(k).tr;
    const int64_t rfull = dst_step == 1 ? rows / TR * TR : 0, cfull = cols / TR * TR;
    if (src_ld > dst_ld) {   /* TR source rows at a time */
        for (int64_t r0 = 0; r0 < rfull; r0 += TR)
            for (int64_t c0 = 0; c0 < cfull; c0 += TR)
                tile(src + r0 * src_ld + c0, (size_t)src_ld, dst + c0 * dst_ld + r0,
                     (size_t)dst_ld);
    } else {   /* TR destination rows at a time */
        for (int64_t c0 = 0; c0 < cfull; c0 += TR)
            for (int64_t r0 = 0; r0 < rfull; r0 += TR)
                tile(src + r0 * src_ld + c0, (size_t)src_ld, dst + c0 * dst_ld + r0,
                     (size_t)dst_ld);
    }
    for (int64_t c = 0; c < cols; c++)   /* what the tiles left: the edges */
        for (int64_t r = c < cfull ? rfull : 0; r < rows; r++)
            dst[c * dst_ld + r * dst_step] = src[r * src_ld + c];
}


/* NCHW input rows [h0, h1) of `channels` planes (from x_c, the first plane) -> the same rows
 * NHWC-ordered at dst ((h1 - h0) x W x channels). A plane's rows are contiguous, so this is
 * one transpose of (h1 - h0)*W columns: row by row, a 7- or 14-wide map left most of each
 * row to the transpose's scalar edge loop. */
static void FN(transpose_rows)(const i2r_layout *L, const i2r_geom *g, const T *x_c,
                               int64_t channels, int64_t h0, int64_t h1, T *dst)
{
    if (h1 > h0)
        FN(transpose)(L, x_c + h0 * g->w, channels, (h1 - h0) * g->w, g->h * g->w, dst,
                      channels, 1);
}

/* The packed weights of a group for the strip rotation rot (one copy serves every rotation
 * unless L->rotated_copies). */
static const T *FN(rotation_panels)(const struct i2r_weights *w, int64_t group, int64_t rot)
{
    const i2r_layout *L = &w->L;
    const int64_t copy = L->nrot > 1 ? rot / L->rot_unit : 0;
    return (const T *)w->packed + (group * L->nrot + copy) * rotation_size(L);
}

