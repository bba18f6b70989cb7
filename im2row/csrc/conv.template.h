/* Per-dtype convolution loops, included by conv.c with T (float or double), SFX (f32/f64)
 * and GEMM_FN (the microkernel type) defined. */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

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

static inline void FN(zero_channels)(T *dst, int64_t n)
{
    if (n >= 16) {
        memset(dst, 0, (size_t)n * sizeof(T));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = (T)0;
}

/* Packed weights for rotation rot: row k = (kh*KW + slot)*Cg + c of panel p holds
 * w[kh][kw][c][p*NR : p*NR + NR] with slot = (kw + rot) mod KW (zeros past OCg). Depthwise: one
 * (KH*KW, C) block per rotation, tap (kh, slot) holding w[c][kh][kw] for every channel c.
 * The source is read in place through its strides (i2r.h), in either layout. */
static void FN(pack_weights)(const i2r_layout *L, const T *w, const int64_t *ws, const T *bias,
                             T *packed, T *packed_bias, T *rows)
{
#define W_AT(g, kh, kw, c, oc) (w + (g) * ws[0] + (kh) * ws[1] + (kw) * ws[2] + (c) * ws[3] + \
                                (oc) * ws[4])
    const int64_t NR = L->nr, KW = L->kw, CG = L->cg, OCG = L->ocg;
    T *dst = packed;
    if (rows)   /* 1x1: the weights as A rows [g][oc][c], for pointwise NCHW */
        for (int64_t g = 0; g < L->groups; g++)
            for (int64_t oc = 0; oc < OCG; oc++)
                for (int64_t c = 0; c < CG; c++)
                    rows[(g * OCG + oc) * CG + c] = *W_AT(g, 0, 0, c, oc);
    if (L->depthwise) {   /* C groups of one channel: channel c is group c */
        for (int64_t ri = 0; ri < L->nrot; ri++)
            for (int64_t kh = 0; kh < L->kh; kh++)
                for (int64_t slot = 0; slot < KW; slot++, dst += CG) {
                    int64_t kw = (slot - ri * L->rot_unit % KW + KW) % KW;
                    for (int64_t c = 0; c < CG; c++)
                        dst[c] = *W_AT(c, kh, kw, 0, 0);
                }
        if (bias)
            memcpy(packed_bias, bias, (size_t)CG * sizeof(T));
        return;
    }
    for (int64_t g = 0; g < L->groups; g++) {
        for (int64_t ri = 0; ri < L->nrot; ri++) {
            int64_t rot = ri * L->rot_unit;
            for (int64_t p = 0; p < L->npanels; p++, dst += L->k * NR) {
                const int64_t width = min64(NR, OCG - p * NR);
                for (int64_t kh = 0; kh < L->kh; kh++)
                    for (int64_t kw = 0; kw < KW; kw++)
                        for (int64_t c = 0; c < CG; c++) {
                            T *row = dst + ((kh * KW + (kw + rot) % KW) * CG + c) * NR;
                            const T *src = W_AT(g, kh, kw, c, p * NR);
                            if (ws[4] == 1)   /* HWIO: the output channels are contiguous */
                                memcpy(row, src, (size_t)width * sizeof(T));
                            else              /* OIHW: gathered */
                                for (int64_t oc = 0; oc < width; oc++)
                                    row[oc] = src[oc * ws[4]];
                            for (int64_t oc = width; oc < NR; oc++)
                                row[oc] = (T)0;
                        }
            }
        }
        if (bias)
            for (int64_t j = 0; j < L->npanels * NR; j++)
                packed_bias[g * L->npanels * NR + j] = j < OCG ? bias[g * OCG + j] : (T)0;
    }
#undef W_AT
}

/* Where I2R_BLOCKED lowers from: element (image n, row h, column col, channel c of the
 * group) at base + (n - n_first)*img + h*hs + col*ws + c; the A blocks go to abuf. */
typedef struct {
    const T *base;
    int64_t n_first, img, hs, ws;
    T *abuf;
} FN(lowering);

/* A[i][k - k0] = im2row(p0 + i, k) for i < mc, k0 <= k < k0 + kc: one block of the batch's
 * im2row matrix (rows: pixels of the batch; columns: (kh, kw, c)), kc values a row. */
static void FN(lower_block)(const i2r_layout *L, const i2r_geom *g, const FN(lowering) *src,
                            int64_t p0, int64_t mc, int64_t k0, int64_t kc, T *a)
{
    const int64_t CG = L->cg, opix = g->oh * g->ow;
    for (int64_t i = 0; i < mc; i++, a += kc) {
        int64_t p = p0 + i, n = p / opix, oh = p % opix / g->ow, ow = p % g->ow;
        const T *img = src->base + (n - src->n_first) * src->img;
        for (int64_t k = k0; k < k0 + kc;) {
            int64_t tap = k / CG, c = k % CG, run = min64(CG - c, k0 + kc - k);
            int64_t h = oh * g->sh + tap / g->kw * g->dh - g->pt;
            int64_t col = ow * g->sw + tap % g->kw * g->dw - g->pl;
            if (h < 0 || h >= g->h || col < 0 || col >= g->w)
                FN(zero_channels)(a + (k - k0), run);
            else
                FN(copy_channels)(a + (k - k0), img + h * src->hs + col * src->ws + c, run);
            k += run;
        }
    }
}

/* C[M x OCg] = A[M x K] * B (+ bias, ReLU), A rows at a + i*lda, each row nseg segments of
 * seglen contiguous values seg_stride apart; only the columns of weight panels [pa, pb) of
 * ncols (OCg); accumulate adds to C from the first K block on (C prefilled). With `low`
 * (I2R_BLOCKED) A is not given: each A block is lowered from low->base (rows from pixel low_p0
 * on) into low->abuf just before it is used, so the im2row matrix never exists whole. Blocked as in BLIS: K blocks of <= KC values
 * inside a segment (outermost: the K block of all weight panels stays in L2 while every row
 * block passes), M blocks of MC_TILES register tiles (A block in L1/L2, reused by every
 * panel), then NR panels and MR tiles; the register tile accumulates in C across K blocks. */
static void FN(gemm_blocked)(const struct i2r_weights *w, int64_t M, const T *a, int64_t lda,
                             int64_t nseg, int64_t seglen, int64_t seg_stride,
                             const T *bpack, const T *bias, T *c, int64_t ldc, int64_t pa,
                             int64_t pb, int64_t ncols, int accumulate,
                             const i2r_geom *g, const FN(lowering) *low, int64_t low_p0)
{
    const i2r_layout *L = &w->L;
    const GEMM_FN ukernel = (GEMM_FN)L->fn;
    const int64_t MR = L->mr, NR = L->nr, K = L->k, MC = L->mr * MC_TILES;
    const int64_t kcs = k_block(seglen);
    for (int64_t s = 0; s < nseg; s++)
        for (int64_t k0 = 0; k0 < seglen; k0 += kcs) {
            int64_t kc = seglen - k0 < kcs ? seglen - k0 : kcs;
            int first = s == 0 && k0 == 0, last = s == nseg - 1 && k0 + kc == seglen;
            int flags = (first && !accumulate ? 0 : GEMM_ACCUMULATE) |
                        (last ? GEMM_EPILOGUE | (w->relu ? GEMM_RELU : 0) : 0);
            for (int64_t m0 = 0; m0 < M; m0 += MC) {
                int64_t mc = M - m0 < MC ? M - m0 : MC;
                const T *ablk = a + m0 * lda + s * seg_stride + k0;
                int64_t ald = lda;
                if (low) {   /* I2R_BLOCKED: lower this A block now, into the cache */
                    FN(lower_block)(L, g, low, low_p0 + m0, mc, k0, kc, low->abuf);
                    ablk = low->abuf;
                    ald = kc;
                }
                for (int64_t p = pa; p < pb; p++) {
                    int64_t nr = ncols - p * NR < NR ? ncols - p * NR : NR;
                    const T *bp = bpack + p * K * NR + (s * seglen + k0) * NR;
                    const T *bb = bias ? bias + p * NR : NULL;
                    for (int64_t i = 0; i < mc; i += MR) {
                        int64_t mr = mc - i < MR ? mc - i : MR;
                        ukernel((size_t)mr, (size_t)nr, (size_t)kc, ablk + i * ald,
                                (size_t)ald, bp, c + (m0 + i) * ldc + p * NR, (size_t)ldc,
                                bb, flags);
                    }
                }
            }
        }
}

/* Depthwise counterpart of gemm_blocked (same arguments): row i of C is the channel-wise
 * product of the KH*KW taps of A row i with the packed (taps, C) weights. */
static void FN(dwconv_rows)(const struct i2r_weights *w, int64_t M, const T *a, int64_t lda,
                            int64_t nseg, int64_t seglen, int64_t seg_stride,
                            const T *bpack, const T *bias, T *c, int64_t ldc)
{
    const i2r_layout *L = &w->L;
    void (*ukernel)(size_t, size_t, size_t, size_t, size_t, const T *, size_t, const T *,
                    const T *, T *, size_t, int) = L->dwconv;
    for (int64_t i = 0; i < M; i += DWCONV_ROWS)
        ukernel((size_t)min64(DWCONV_ROWS, M - i), (size_t)L->cg, (size_t)nseg,
                (size_t)(seglen / L->cg), (size_t)seg_stride, a + i * lda, (size_t)lda, bpack,
                bias, c + i * ldc, (size_t)ldc, w->relu);
}

/* C = A * packed weights (+ bias, ReLU), output channels of panels [pa, pb): the GEMM, or
 * its depthwise counterpart (always all channels: depthwise work is never split by panel). */
static void FN(multiply)(const struct i2r_weights *w, int64_t M, const T *a, int64_t lda,
                         int64_t nseg, int64_t seglen, int64_t seg_stride,
                         const T *bpack, const T *bias, T *c, int64_t ldc, int64_t pa,
                         int64_t pb)
{
    if (w->L.depthwise)
        FN(dwconv_rows)(w, M, a, lda, nseg, seglen, seg_stride, bpack, bias, c, ldc);
    else
        FN(gemm_blocked)(w, M, a, lda, nseg, seglen, seg_stride, bpack, bias, c, ldc, pa, pb,
                         w->L.ocg, 0, NULL, NULL, 0);
}

/* dst[c*dst_ld + r*dst_step] = src[r*src_ld + c] for r < rows, c < cols: NCHW <-> NHWC-ordered
 * data. Whole tr x tr tiles go through the ISA's register transpose when dst_step is 1; the
 * tiles are walked down TR destination rows at a time (TR constant-stride store streams,
 * which the hardware prefetcher follows: NCHW planes are far apart). */
static void FN(transpose)(const i2r_layout *L, const T *src, int64_t rows, int64_t cols,
                          int64_t src_ld, T *dst, int64_t dst_ld, int64_t dst_step)
{
    void (*tile)(const T *, size_t, T *, size_t) = L->transpose;
    const int64_t TR = L->tr;
    const int64_t rfull = dst_step == 1 ? rows / TR * TR : 0, cfull = cols / TR * TR;
    for (int64_t c0 = 0; c0 < cfull; c0 += TR)
        for (int64_t r0 = 0; r0 < rfull; r0 += TR)
            tile(src + r0 * src_ld + c0, (size_t)src_ld, dst + c0 * dst_ld + r0,
                 (size_t)dst_ld);
    for (int64_t c = 0; c < cols; c++)   /* what the tiles left: the edges */
        for (int64_t r = c < cfull ? rfull : 0; r < rows; r++)
            dst[c * dst_ld + r * dst_step] = src[r * src_ld + c];
}

/* The input columns of one image and group, as the strip fill reads them. NHWC: in place.
 * NCHW: through `stage`, a transposed copy ([row][column][channel]) of SB consecutive
 * columns, refilled when a column outside it is asked for, so that each cache line of the
 * NCHW input is read once rather than once per column (and the strip fill stays a memcpy). */
typedef struct {
    const T *x_img;
    T *stage;              /* NCHW only: rows x SB x Cg */
    int64_t s0, s1;        /* columns held in stage */
    int64_t end;           /* columns the task reads are < end: stage no further */
} FN(column_source);

/* Input column `col` (0 <= col < W) of the group: pointer to its row 0, rows *row_stride
 * apart, Cg contiguous channels each. */
static const T *FN(input_column)(const i2r_layout *L, const i2r_geom *g, int64_t group,
                                 FN(column_source) *src, int64_t rows, int64_t col,
                                 int64_t *row_stride)
{
    const int64_t CG = L->cg, c0 = group * CG;
    if (g->nhwc) {
        *row_stride = g->w * g->c;
        return src->x_img + col * g->c + c0;
    }
    if (col < src->s0 || col >= src->s1) {
        const int64_t plane = g->h * g->w;
        src->s0 = col;
        src->s1 = min64(col + SB, min64(g->w, src->end));
        /* (Cg x columns) -> (columns x Cg) for every row, a block of TR channels at a time:
         * the inner loop walks down TR planes together, TR constant-stride streams that the
         * hardware prefetcher follows (all Cg planes at once defeat it and the TLB). */
        const T *first = src->x_img + c0 * plane + src->s0;
        for (int64_t cb = 0; cb < CG; cb += L->tr)
            for (int64_t h = 0; h < rows; h++)
                FN(transpose)(L, first + cb * plane + h * g->w, min64(L->tr, CG - cb),
                              src->s1 - src->s0, plane, src->stage + h * SB * CG + cb, CG, 1);
    }
    *row_stride = SB * CG;
    return src->stage + (col - src->s0) * CG;
}

/* Write padded input column pc of one image and group into strip slot `slot`: the rows that
 * hold input (the padding rows were zeroed once). Returns the values written. */
static int64_t FN(fill_strip_column)(const i2r_layout *L, const i2r_geom *g, int64_t group,
                                     FN(column_source) *src, T *strip, int64_t strip_rows,
                                     int64_t slot, int64_t pc)
{
    const int64_t CG = L->cg, KW = L->kw, rows = strip_input_rows(g, strip_rows);
    const int64_t col = pc - g->pl;
    T *dst = strip + (g->pt * KW + slot) * CG;
    if (col < 0 || col >= g->w) {
        for (int64_t h = 0; h < rows; h++, dst += KW * CG)
            FN(zero_channels)(dst, CG);
    } else {
        int64_t stride;
        const T *in = FN(input_column)(L, g, group, src, rows, col, &stride);
        for (int64_t h = 0; h < rows; h++, dst += KW * CG, in += stride)
            FN(copy_channels)(dst, in, CG);
    }
    return rows * CG;
}

/* Rows [pix0, pix1) (output pixels of one image) of the im2row matrix of one group, columns
 * in (kh, kw, c) order. The input rows [h0, H) of the group are read as NHWC-ordered rows:
 * row h at src + (h - h0)*hs, column w at + w*ws, Cg contiguous channels. */
static void FN(lower_rows)(const i2r_layout *L, const i2r_geom *g, const T *src, int64_t hs,
                           int64_t ws, int64_t h0, int64_t pix0, int64_t pix1, T *buf)
{
    const int64_t CG = L->cg;
    for (int64_t p = pix0; p < pix1; p++) {
        int64_t oh = p / g->ow, ow = p % g->ow;
        for (int64_t kh = 0; kh < g->kh; kh++) {
            int64_t h = oh * g->sh + kh * g->dh - g->pt;
            for (int64_t kw = 0; kw < g->kw; kw++, buf += CG) {
                int64_t col = ow * g->sw + kw * g->dw - g->pl;
                if (h < 0 || h >= g->h || col < 0 || col >= g->w)
                    FN(zero_channels)(buf, CG);
                else
                    FN(copy_channels)(buf, src + (h - h0) * hs + col * ws, CG);
            }
        }
    }
}

/* Lower rows [p0, p1) of the batch's im2row matrix (row p: image p / (OH*OW), pixel
 * p % (OH*OW)) for one group into buf. NCHW input is first transposed, the input rows each
 * image's pixels need, into `slab` (rows x W x Cg), so the lowering copies runs of channels. */
static void FN(lower_batch_rows)(const i2r_layout *L, const i2r_geom *g, const T *x,
                                 int64_t group, int64_t p0, int64_t p1, T *buf, T *slab)
{
    const int64_t CG = L->cg, c0 = group * CG, plane = g->h * g->w, opix = g->oh * g->ow;
    for (int64_t p = p0; p < p1;) {
        int64_t n = p / opix, end = min64(p1, (n + 1) * opix);
        int64_t pix0 = p - n * opix, pix1 = end - n * opix;
        const T *x_img = x + n * g->c * plane;
        if (g->nhwc) {
            FN(lower_rows)(L, g, x_img + c0, g->w * g->c, g->c, 0, pix0, pix1, buf);
        } else {
            int64_t h0 = max64(0, pix0 / g->ow * g->sh - g->pt);
            int64_t h1 = min64(g->h, (pix1 - 1) / g->ow * g->sh - g->pt + (g->kh - 1) * g->dh + 1);
            for (int64_t h = h0; h < h1; h++)   /* (Cg x W) -> (W x Cg) per input row */
                FN(transpose)(L, x_img + c0 * plane + h * g->w, CG, g->w, plane,
                              slab + (h - h0) * g->w * CG, CG, 1);
            FN(lower_rows)(L, g, slab, g->w * CG, CG, h0, pix0, pix1, buf);
        }
        buf += (end - p) * L->k;
        p = end;
    }
}

static const T *FN(rotation_panels)(const struct i2r_weights *w, int64_t group, int64_t rot)
{
    const i2r_layout *L = &w->L;
    return (const T *)w->packed + (group * L->nrot + rot / L->rot_unit) * rotation_size(L);
}

/* One strip task: output columns at positions [p0, p1) of images [n0, n0 + nimg) (a stack,
 * see make_schedule), group `group`, output channels of weight panels [pa, pb). */
static int64_t FN(strip_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                              const T *x, T *y, int64_t group, int64_t n0, int64_t nimg,
                              int64_t p0, int64_t p1, int64_t pa, int64_t pb, T *strip,
                              T *cbuf, T *stage)
{
    const i2r_layout *L = &w->L;
    const int64_t KW = L->kw, CG = L->cg, OCG = L->ocg, t = L->col_step, row = KW * CG;
    const int64_t x_image = g->c * g->h * g->w, y_image = g->oc * g->oh * g->ow;
    const int64_t block_gemm_rows = s->block_rows / g->sh;
    const int64_t M = (nimg - 1) * block_gemm_rows + g->oh;
    const int64_t stage_size = strip_input_rows(g, s->strip_rows) * SB * CG;
    const T *bias = w->bias ? (const T *)w->bias + group * L->npanels * L->nr : NULL;
    /* input columns the task reads end after its last output column's last tap (in chain
     * order, t > 1, positions are not columns: then bound by the last output column) */
    int64_t last = L->col_step == 1 ? p1 - 1 : g->ow - 1;
    FN(column_source) src[STRIP_STACK_MAX];
    for (int64_t b = 0; b < nimg; b++) {
        FN(column_source) one = {x + (n0 + b) * x_image, stage + b * stage_size, 0, 0,
                                 last * g->sw + (g->kw - 1) * g->dw - g->pl + 1};
        src[b] = one;
    }
    int64_t copied = 0, r, q, nbuf = 0, j0 = 0;
    position_to_chain(p0, g->ow, t, &r, &q);
    for (int64_t p = p0; p < p1; p++) {
        int64_t len = (g->ow - r + t - 1) / t, j = r + q * t;
        /* the rotation of global column j + ow0 (its chain index (j + ow0) / t; = q when
         * ow0 = 0), so that windows of a larger output sum as the whole call does */
        int64_t rot = L->rot_step ? ((j + g->ow0) / t * L->rot_step) % KW : 0;
        int64_t taps = step_new_taps(L, p == p0, q);
        for (int64_t b = 0; b < nimg; b++)
            for (int64_t kw = KW - taps; kw < KW; kw++)
                copied += FN(fill_strip_column)(L, g, group, &src[b],
                                                strip + b * s->block_rows * row, s->strip_rows,
                                                (kw + rot) % KW, j * g->sw + kw * g->dw);
        const T *bpack = FN(rotation_panels)(w, group, rot);
        int64_t nseg = g->dh == 1 ? 1 : g->kh, seglen = g->dh == 1 ? L->k : row;
        if (g->nhwc && s->stack == 1) {   /* straight into the output column */
            FN(multiply)(w, M, strip, g->sh * row, nseg, seglen, g->dh * row, bpack, bias,
                         y + n0 * y_image + j * g->oc + group * OCG, g->ow * g->oc, pa, pb);
        } else if (g->nhwc) {   /* stacked: the valid rows of each image to its output */
            FN(multiply)(w, M, strip, g->sh * row, nseg, seglen, g->dh * row, bpack, bias,
                         cbuf, OCG, pa, pb);
            for (int64_t b = 0; b < nimg; b++)
                for (int64_t oh = 0; oh < g->oh; oh++)
                    memcpy(y + (n0 + b) * y_image + (oh * g->ow + j) * g->oc + group * OCG,
                           cbuf + (b * block_gemm_rows + oh) * OCG, (size_t)OCG * sizeof(T));
        } else {
            FN(multiply)(w, M, strip, g->sh * row, nseg, seglen, g->dh * row, bpack, bias,
                         cbuf + nbuf * OCG, s->jb * OCG, pa, pb);
            if (nbuf++ == 0)
                j0 = j;
        }
        if (++q == len) { q = 0; r++; }
        /* flush NCHW columns when the buffer is full, at a chain's end or the task's end */
        if (!g->nhwc && (nbuf == s->jb || q == 0 || p + 1 == p1)) {
            /* columns j0, j0+t, ... of rows 0..OH-1 of each image: cbuf[row][jj][oc] ->
             * y[oc][oh][j], TR channels at a time down all rows (TR store streams) */
            const int64_t plane = g->oh * g->ow, oc_end = min64(pb * L->nr, OCG);
            for (int64_t b = 0; b < nimg; b++) {
                T *yg = y + (n0 + b) * y_image + group * OCG * plane + j0;
                const T *rows = cbuf + b * block_gemm_rows * s->jb * OCG;
                for (int64_t ob = pa * L->nr; ob < oc_end; ob += L->tr)
                    for (int64_t oh = 0; oh < g->oh; oh++)
                        FN(transpose)(L, rows + oh * s->jb * OCG + ob, nbuf,
                                      min64(L->tr, oc_end - ob), OCG,
                                      yg + ob * plane + oh * g->ow, plane, t);
            }
            nbuf = 0;
        }
    }
    return copied;
}

/* One im2row task: rows [p0, p1) of the batch's im2row matrix (output pixels of possibly
 * several images) for one group, one GEMM. */
/* I2R_BLOCKED, one group, rows [p0, p1) of the batch: the lowering source. NHWC: the input
 * itself; NCHW: the task's images transposed into `slab` (images x H x W x Cg) first. */
static FN(lowering) FN(blocked_source)(const i2r_layout *L, const i2r_geom *g, const T *x,
                                       int64_t group, int64_t p0, int64_t p1, T *slab, T *abuf)
{
    const int64_t CG = L->cg, plane = g->h * g->w, opix = g->oh * g->ow;
    FN(lowering) low = {x + group * CG, 0, plane * g->c, g->w * g->c, g->c, abuf};
    if (g->nhwc)
        return low;
    low.base = slab;
    low.n_first = p0 / opix;
    low.img = plane * CG;
    low.hs = g->w * CG;
    low.ws = CG;
    for (int64_t n = low.n_first; n <= (p1 - 1) / opix; n++)
        for (int64_t h = 0; h < g->h; h++)   /* (Cg x W) -> (W x Cg) per input row */
            FN(transpose)(L, x + (n * g->c + group * CG) * plane + h * g->w, CG, g->w, plane,
                          slab + (n - low.n_first) * low.img + h * low.hs, CG, 1);
    return low;
}

static int64_t FN(full_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                             const T *x, T *y, int64_t group, int64_t p0, int64_t p1,
                             T *buf, T *cbuf, T *slab)
{
    const i2r_layout *L = &w->L;
    const T *bias = w->bias ? (const T *)w->bias + group * L->npanels * L->nr : NULL;
    const T *a;
    int64_t lda, M = p1 - p0, copied = 0;
    FN(lowering) low, *lowp = NULL;
    if (s->direct) {   /* 1x1, stride 1, no padding, NHWC: the input is the im2row matrix */
        a = x + p0 * g->c + group * L->cg;
        lda = g->c;
    } else if (s->blocked) {
        low = FN(blocked_source)(L, g, x, group, p0, p1, slab, buf);
        lowp = &low;
        a = NULL;
        lda = 0;
        copied = M * L->k;
    } else {
        FN(lower_batch_rows)(L, g, x, group, p0, p1, buf, slab);
        a = buf;
        lda = L->k;
        copied = M * L->k;
    }
    const T *bpack = FN(rotation_panels)(w, group, 0);
    /* NHWC: straight into the output (rows of consecutive images are consecutive); NCHW:
     * into cbuf, then transposed into each image's planes */
    const int64_t OCG = L->ocg, opix = g->oh * g->ow;
    T *c = g->nhwc ? y + p0 * g->oc + group * OCG : cbuf;
    const int64_t ldc = g->nhwc ? g->oc : OCG;
    if (lowp)
        FN(gemm_blocked)(w, M, a, lda, 1, L->k, 0, bpack, bias, c, ldc, 0, L->npanels, OCG, 0,
                         g, lowp, p0);
    else
        FN(multiply)(w, M, a, lda, 1, L->k, 0, bpack, bias, c, ldc, 0, L->npanels);
    if (g->nhwc)
        return copied;
    for (int64_t p = p0; p < p1;) {   /* transpose into each image's NCHW planes */
        int64_t n = p / opix, end = min64(p1, (n + 1) * opix);
        FN(transpose)(L, cbuf + (p - p0) * OCG, end - p, OCG, OCG,
                      y + (n * g->oc + group * OCG) * opix + p % opix, opix, 1);
        p = end;
    }
    return copied;
}

/* Depthwise on NCHW, channels [c0, c1) of one image: each channel's input rows are copied
 * into the padded plane (its zero borders were written once), then the dwplane microkernel
 * convolves the plane. */
static int64_t FN(plane_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                              const T *x_img, T *y_img, int64_t c0, int64_t c1, T *plane, T *wc)
{
    const i2r_layout *L = &w->L;
    void (*dwplane)(size_t, size_t, size_t, size_t, size_t, size_t, size_t, size_t, const T *,
                    size_t, const T *, T, T *, int) = L->dwplane;
    const int64_t PC = s->plane_cols, rows = strip_input_rows(g, s->strip_rows);
    const int64_t cols = plane_input_cols(g, s), taps = g->kh * g->kw, C = L->cg;
    const T *packed = (const T *)w->packed, *bias = (const T *)w->bias;   /* [kh][kw][c] */
    for (int64_t c = c0; c < c1; c++) {
        for (int64_t h = 0; h < rows; h++)
            FN(copy_channels)(plane + (g->pt + h) * PC + g->pl,
                              x_img + (c * g->h + h) * g->w, cols);
        for (int64_t t = 0; t < taps; t++)
            wc[t] = packed[t * C + c];
        dwplane((size_t)g->oh, (size_t)g->ow, (size_t)g->kh, (size_t)g->kw, (size_t)g->sh,
                (size_t)g->sw, (size_t)g->dh, (size_t)g->dw, plane, (size_t)PC, wc,
                bias ? bias[c] : (T)0, y_img + c * g->oh * g->ow, w->relu);
    }
    return (c1 - c0) * rows * cols;
}

/* A pointwise (1x1, stride 1, unpadded) NCHW convolution is the GEMM W (OCg x Cg) * X
 * (Cg x pixels) with each output channel a contiguous row of the NCHW result: the weights
 * are the A rows (packed once as w->rows), the pixels of X are packed into NR-wide panels
 * (each input value copied once), and the result needs no transpose. Rows [p0, p1) of the
 * batch's pixels, one group; bias is prefilled into the output rows. */
static int64_t FN(pointwise_nchw_task)(const struct i2r_weights *w, const i2r_geom *g,
                                       const T *x, T *y, int64_t group, int64_t p0,
                                       int64_t p1, T *panels)
{
    const i2r_layout *L = &w->L;
    const int64_t NR = L->nr, CG = L->cg, OCG = L->ocg, plane = g->oh * g->ow;
    const T *a = (const T *)w->rows + group * OCG * CG;
    const T *bias = w->bias ? (const T *)w->bias + group * L->npanels * NR : NULL;
    for (int64_t p = p0; p < p1;) {
        int64_t n = p / plane, end = min64(p1, (n + 1) * plane);
        int64_t q0 = p - n * plane, npix = end - p, np = cdiv(npix, NR);
        const T *xg = x + (n * g->c + group * CG) * plane + q0;
        for (int64_t b = 0; b < np; b++) {      /* panel b: [c][NR] pixels q0 + b*NR ... */
            int64_t cnt = min64(NR, npix - b * NR);
            T *dst = panels + b * CG * NR;
            for (int64_t c = 0; c < CG; c++, dst += NR) {
                FN(copy_channels)(dst, xg + c * plane + b * NR, cnt);
                FN(zero_channels)(dst + cnt, NR - cnt);
            }
        }
        T *yb = y + (n * g->oc + group * OCG) * plane + q0;
        if (bias)
            for (int64_t oc = 0; oc < OCG; oc++)
                for (int64_t j = 0; j < npix; j++)
                    yb[oc * plane + j] = bias[oc];
        FN(gemm_blocked)(w, OCG, a, CG, 1, CG, 0, panels, NULL, yb, plane, 0, np, npix,
                         bias != NULL, NULL, NULL, 0);
        p = end;
    }
    return (p1 - p0) * CG;
}

/* Fresh thread scratch: zero the strip's padding rows (never written later); with debug_nan
 * fill everything else with NaN so a read of a slot or row not yet written shows. */
static void FN(init_scratch)(const i2r_layout *L, const i2r_geom *g, const schedule *s,
                             i2r_method method, int debug_nan, T *scratch)
{
    int64_t n = s->thread_bytes / (int64_t)sizeof(T);
    if (debug_nan)
        for (int64_t i = 0; i < n; i++)
            scratch[i] = (T)NAN;
    if (s->plane) {   /* zero the plane's borders: rows and columns that hold no input */
        const int64_t PC = s->plane_cols, in_rows = strip_input_rows(g, s->strip_rows);
        const int64_t in_cols = plane_input_cols(g, s);
        for (int64_t r = 0; r < s->strip_rows; r++) {
            T *row = scratch + r * PC;
            if (r < g->pt || r >= g->pt + in_rows) {
                memset(row, 0, (size_t)PC * sizeof(T));
            } else {
                memset(row, 0, (size_t)min64(g->pl, PC) * sizeof(T));
                if (g->pl + in_cols < PC)
                    memset(row + g->pl + in_cols, 0,
                           (size_t)(PC - g->pl - in_cols) * sizeof(T));
            }
        }
    } else if (method == I2R_STRIP) {   /* each stacked image's padding rows */
        int64_t row = L->kw * L->cg, in_rows = strip_input_rows(g, s->strip_rows);
        int64_t top = min64(g->pt, s->strip_rows);
        for (int64_t b = 0; b < s->stack; b++) {
            T *block = scratch + b * s->block_rows * row;
            int64_t end = b + 1 < s->stack ? s->block_rows : s->strip_rows;
            memset(block, 0, (size_t)(top * row) * sizeof(T));
            memset(block + (top + in_rows) * row, 0,
                   (size_t)((end - top - in_rows) * row) * sizeof(T));
        }
    }
}

static i2r_status FN(conv)(const struct i2r_weights *w, const i2r_geom *g, i2r_method method,
                           int nthreads, int debug_nan, const void *xv, void *yv,
                           i2r_stats *stats)
{
    const i2r_layout *L = &w->L;
    const T *x = (const T *)xv;
    T *y = (T *)yv;
    schedule s;
    make_schedule(&s, L, g, method, nthreads);
    const int64_t x_image = g->c * g->h * g->w, y_image = g->oc * g->oh * g->ow;
    const int64_t abytes = s.abytes, cbytes = s.cbytes;
    int64_t copied = 0;
    int failed = 0;

#ifdef I2R_HAVE_OPENMP
#pragma omp parallel num_threads((int)s.threads) reduction(+ : copied) reduction(| : failed)
#endif
    {
        T *scratch = (T *)alloc64(s.thread_bytes);
        if (s.thread_bytes && !scratch)
            failed = 1;
        else
            FN(init_scratch)(L, g, &s, method, debug_nan, scratch);
#ifdef I2R_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t task = 0; task < s.ntasks; task++) {
            if (failed)
                continue;
            int64_t b = task % s.parts;
            if (s.plane) {
                int64_t n = task / s.parts;
                copied += FN(plane_task)(w, g, &s, x + n * x_image, y + n * y_image,
                                         b * L->cg / s.parts, (b + 1) * L->cg / s.parts,
                                         scratch, scratch + round_up64(s.strip_rows *
                                         s.plane_cols * (int64_t)sizeof(T)) / (int64_t)sizeof(T));
            } else if (method == I2R_STRIP) {
                int64_t unit = task / s.parts, group = unit % L->groups;
                int64_t n0 = unit / L->groups * s.stack, p0, p1, pa, pb;
                task_range(&s, L, b, g->ow, &p0, &p1, &pa, &pb);
                if (p0 < p1)
                    copied += FN(strip_task)(w, g, &s, x, y, group, n0,
                                             min64(s.stack, g->n - n0), p0, p1, pa, pb,
                                             scratch, scratch + abytes / (int64_t)sizeof(T),
                                             scratch + (abytes + cbytes) / (int64_t)sizeof(T));
            } else if (s.pointwise_nchw) {
                int64_t group = task / s.parts, p0 = b * s.chunk;
                int64_t p1 = min64(p0 + s.chunk, g->n * g->oh * g->ow);
                copied += FN(pointwise_nchw_task)(w, g, x, y, group, p0, p1, scratch);
            } else {
                int64_t group = task / s.parts, p0 = b * s.chunk;
                int64_t p1 = min64(p0 + s.chunk, g->n * g->oh * g->ow);
                copied += FN(full_task)(w, g, &s, x, y, group, p0, p1, scratch,
                                        scratch + abytes / (int64_t)sizeof(T),
                                        scratch + (abytes + cbytes) / (int64_t)sizeof(T));
            }
        }
        free(scratch);
    }
    if (stats) {
        stats->threads = s.threads;
        stats->workspace_bytes = s.threads * s.thread_bytes;
        stats->copied_values = copied;
        stats->packed_bytes = w->packed_bytes;
    }
    return failed ? I2R_ENOMEM : I2R_OK;
}

#undef CAT_
#undef CAT
#undef FN
#undef T
#undef SFX
#undef GEMM_FN
