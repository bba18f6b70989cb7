/* I2R_FULL and I2R_BLOCKED: the traditional im2row matrix, whole per task or lowered one
 * block at a time inside the GEMM; and I2R_BLOCKED on NCHW, where blocked_as_wx says so
 * (plan.c), as W * im2col panels (wx_task).
 * Included by conv.c per dtype (T and SFX defined; see driver.h). */
/* a[i*lda + k - k0] = im2row(p0 + i, k) for i < mc, k0 <= k < k0 + kc: one block of the
 * batch's im2row matrix (rows: pixels of the batch; columns: (kh, kw, c)). */
static void FN(lower_block)(const i2r_layout *L, const i2r_geom *g, const FN(lowering) *src,
                            int64_t p0, int64_t mc, int64_t k0, int64_t kc, int64_t lda, T *a)
{
    const int64_t CG = L->cg, opix = g->oh * g->ow;
    for (int64_t i = 0; i < mc; i++, a += lda) {
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

/* Rows [pix0, pix1) (output pixels of one image) of the im2row matrix of one group, columns
 * in (kh, kw, c) order, lda apart in buf. The input rows [h0, H) of the group are read as
 * NHWC-ordered rows: row h at src + (h - h0)*hs, column w at + w*ws, Cg contiguous channels. */
static void FN(lower_rows)(const i2r_layout *L, const i2r_geom *g, const T *src, int64_t hs,
                           int64_t ws, int64_t h0, int64_t pix0, int64_t pix1, T *buf,
                           int64_t lda)
{
    const int64_t CG = L->cg;
    for (int64_t p = pix0; p < pix1; p++, buf += lda - L->k) {
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
 * p % (OH*OW)) for one group into buf, lda apart. NCHW input is first transposed, the input rows each
 * image's pixels need, into `slab` (rows x W x Cg), so the lowering copies runs of channels;
 * a pointwise layer's pixels are transposed straight into buf. */
static void FN(lower_batch_rows)(const i2r_layout *L, const i2r_geom *g, const T *x,
                                 int64_t group, int64_t p0, int64_t p1, T *buf, int64_t lda,
                                 T *slab)
{
    const int64_t CG = L->cg, c0 = group * CG, plane = g->h * g->w, opix = g->oh * g->ow;
    for (int64_t p = p0; p < p1;) {
        int64_t n = p / opix, end = min64(p1, (n + 1) * opix);
        int64_t pix0 = p - n * opix, pix1 = end - n * opix;
        const T *x_img = x + n * g->c * plane;
        if (g->nhwc) {
            FN(lower_rows)(L, g, x_img + c0, g->w * g->c, g->c, 0, pix0, pix1, buf, lda);
        } else if (is_pointwise(g)) {   /* the pixels' channels are the im2row rows */
            FN(transpose)(L, x_img + c0 * plane + pix0, CG, pix1 - pix0, plane, buf, lda, 1);
        } else {
            int64_t h0, h1;
            rows_read(g, pix0, pix1, &h0, &h1);
            FN(transpose_rows)(L, g, x_img + c0 * plane, CG, h0, h1, slab);
            FN(lower_rows)(L, g, slab, g->w * CG, CG, h0, pix0, pix1, buf, lda);
        }
        buf += (end - p) * lda;
        p = end;
    }
}

/* I2R_BLOCKED, one group, rows [p0, p1) of the batch: the lowering source. NHWC: the input
 * itself; NCHW: the input rows the task's pixels read, transposed into `slab` (images x H x
 * W x Cg, in place there; the rows no pixel reads are left unwritten) first. */
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
    for (int64_t n = low.n_first; n <= (p1 - 1) / opix; n++) {
        int64_t h0, h1;
        rows_read(g, max64(p0, n * opix) - n * opix, min64(p1, (n + 1) * opix) - n * opix,
                  &h0, &h1);
        FN(transpose_rows)(L, g, x + (n * g->c + group * CG) * plane, CG, h0, h1,
                           slab + (n - low.n_first) * low.img + h0 * low.hs);
    }
    return low;
}

/* I2R_BLOCKED's GEMM of rows [p0, p1) of the batch's pixels into c (M = p1 - p0), A lowered
 * block by block from low. Where blocked_skips_padding_rows, the kernel rows that read top or
 * bottom padding are left out (blocked_runs: K runs and the output rows each reaches, in runs
 * and rows[0, KH)), one image at a time, each run over the pixels of its output rows (in
 * rows[KH, 2*KH)). Returns the values lowered. */
static int64_t FN(blocked_gemm)(const struct i2r_weights *w, const i2r_geom *g,
                                const schedule *s, const FN(lowering) *low, int64_t p0,
                                int64_t p1, int64_t pa, int64_t pb, const T *bpack,
                                const T *bias, T *c, int64_t ldc, int cflags, T *bbuf,
                                k_run *runs, row_range *rows)
{
    const i2r_layout *L = &w->L;
    const int64_t passes = lowering_passes(L, s, pa, pb);
    if (!blocked_skips_padding_rows(L, g)) {
        const k_run all = {0, 0, L->k};
        FN(gemm_blocked)(w, p1 - p0, NULL, 0, &all, NULL, 1, bpack, bias, c, ldc, pa, pb,
                         L->ocg, cflags, g, low, p0, bbuf);
        return (p1 - p0) * L->k * passes;
    }
    const int64_t opix = g->oh * g->ow, nruns = blocked_runs(L, g, runs, rows);
    row_range *pix = rows + L->kh;   /* rows[r] as pixels of the image's part in [p0, p1) */
    int64_t lowered = 0;
    for (int64_t p = p0; p < p1;) {
        const int64_t n = p / opix, end = min64(p1, (n + 1) * opix), q0 = p - n * opix;
        for (int64_t r = 0; r < nruns; r++) {
            pix[r].lo = min64(end - p, max64(0, rows[r].lo * g->ow - q0));
            pix[r].hi = min64(end - p, max64(pix[r].lo, rows[r].hi * g->ow - q0));
            lowered += (pix[r].hi - pix[r].lo) * runs[r].len;
        }
        FN(gemm_blocked)(w, end - p, NULL, 0, runs, pix, nruns, bpack, bias, c + (p - p0) * ldc,
                         ldc, pa, pb, L->ocg, cflags, g, low, p, bbuf);
        p = end;
    }
    return lowered * passes;
}

/* Rows [p0, p1) of the batch's pixels, output channels of weight panels [pa, pb) (all of
 * them on NCHW). bbuf: deferred weights' packed K block (L->deferred), else NULL. runs and
 * rows: room for 2*KH of each (blocked_gemm). */
static int64_t FN(full_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                             const T *x, T *y, int64_t group, int64_t p0, int64_t p1,
                             int64_t pa, int64_t pb, T *buf, T *cbuf, T *slab, T *bbuf,
                             k_run *runs, row_range *rows)
{
    const i2r_layout *L = &w->L;
    const T *bias = w->bias ? (const T *)w->bias + group * L->npanels * L->nr : NULL;
    const T *a;
    int64_t lda, M = p1 - p0, copied = 0;
    FN(lowering) low, *lowp = NULL;
    if (s->direct) {   /* 1x1, stride 1, no padding, NHWC: the input is the im2row matrix
                        * (unless its rows alias in the L1: make_schedule) */
        a = x + p0 * g->c + group * L->cg;
        lda = g->c;
    } else if (s->blocked) {
        low = FN(blocked_source)(L, g, x, group, p0, p1, slab, buf);
        lowp = &low;
        a = NULL;
        lda = 0;
    } else {
        lda = a_row_stride(L->k, (int64_t)sizeof(T));
        FN(lower_batch_rows)(L, g, x, group, p0, p1, buf, lda, slab);
        a = buf;
        copied = M * L->k;
    }
    /* deferred: the group's HWIO rows, packed by the GEMM */
    const T *bpack = L->deferred ? (const T *)w->hwio + group * L->ocg
                                 : FN(rotation_panels)(w, group, 0);
    /* NHWC: straight into the output (rows of consecutive images are consecutive); NCHW:
     * into cbuf, then transposed into each image's planes */
    const int64_t OCG = L->ocg, opix = g->oh * g->ow;
    T *c = g->nhwc ? y + p0 * g->oc + group * OCG : cbuf;
    const int64_t ldc = g->nhwc ? g->oc : OCG;
    const k_run all = {0, 0, L->k};
    const int cflags = g->nhwc && s->stream ? GEMM_STREAM : 0;
    if (s->rows_out && !bbuf && ((uintptr_t)c | (uintptr_t)ldc * sizeof(T)) % 64) {
        /* unaligned (make_schedule): MB rows at a time into cbuf, then out as one run (one
         * group, all panels: the rows are contiguous), whole lines streamed */
        const int64_t MB = L->mr * MC_TILES;
        for (int64_t m0 = 0; m0 < M; m0 += MB) {
            const int64_t mb = min64(MB, M - m0);
            if (lowp)
                copied += FN(blocked_gemm)(w, g, s, lowp, p0 + m0, p0 + m0 + mb, pa, pb, bpack,
                                           bias, cbuf, OCG, 0, NULL, runs, rows);
            else
                FN(multiply)(w, mb, a + m0 * lda, lda, &all, NULL, 1, bpack, bias, cbuf, OCG,
                             pa, pb, 0, NULL);
            L->FN(k).stream_copy(c + m0 * ldc, cbuf, (size_t)(mb * OCG) * sizeof(T));
        }
        return copied;
    }
    if (lowp)
        copied = FN(blocked_gemm)(w, g, s, lowp, p0, p1, pa, pb, bpack, bias, c, ldc, cflags,
                                  bbuf, runs, rows);
    else
        FN(multiply)(w, M, a, lda, &all, NULL, 1, bpack, bias, c, ldc, pa, pb, cflags, bbuf);
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


/* Panels [b0, b0 + np) of the im2col matrix of one image, channels [0, ncg) from x_img on:
 * panel b (width values a row) holds, for each k = (c, kh, kw) in OIHW order, the input
 * values tap (kh, kw) of channel c reads for output pixels q0 + b*width ... + width - 1
 * (row-major (oh, ow); zeros past npix and in the padding). W*X lowers NR-wide panels of a
 * group's channels; the weight gradient one block of pixels of a few channels. A panel covers
 * runs of pixels along output rows; along a run the values a tap reads are sw apart in one
 * input row, so each (run, k) is one (strided) copy, and what depends on the run and kw
 * (where the row's valid part starts and ends) is worked out once per panel, not per k. */
static void FN(lower_panels)(const i2r_geom *g, const T *x_img, int64_t ncg, int64_t width,
                             int64_t q0, int64_t npix, int64_t b0, int64_t np, T *panels)
{
    const int64_t WD = width, KH = g->kh, KW = g->kw, CG = ncg, K = ncg * KH * KW;
    const int64_t plane = g->h * g->w, SW = g->sw;
    if (is_pointwise(g)) {
        /* the panels' pixels are consecutive in every channel plane: each plane's run read
         * end to end (panel by panel, the block would read a line from each of CG planes
         * in turn, more streams than the prefetchers follow. Zen 3, plan, 1 thread, ms:
         * 256->64 at 56x56 2.65 -> 2.21, N=8 144->24 at 56x56 6.66 -> 4.71) */
        const int64_t cnt = min64(np * WD, npix - b0 * WD);
        for (int64_t c = 0; c < CG; c++) {
            const T *src = x_img + c * plane + q0 + b0 * WD;
            for (int64_t b = 0; b < np; b++)
                FN(copy_channels)(panels + b * K * WD + c * WD, src + b * WD,
                                  min64(WD, cnt - b * WD));
        }
        if (cnt < np * WD)   /* the last panel's columns past the pixels */
            for (int64_t c = 0; c < CG; c++)
                FN(zero_channels)(panels + (np - 1) * K * WD + c * WD + cnt % WD,
                                  WD - cnt % WD);
        return;
    }
    for (int64_t b = b0; b < b0 + np; b++) {
        T *panel = panels + (b - b0) * K * WD;
        const int64_t first = b * WD, cnt = min64(WD, npix - first);
        int64_t q = q0 + first, oh = q / g->ow, ow = q % g->ow;
        /* one run per output row the panel touches */
        for (int64_t i = 0; i < cnt;) {
            const int64_t run = min64(cnt - i, g->ow - ow);
            for (int64_t kw = 0; kw < KW; kw++) {
                /* outputs [lo, hi) of the run read inside the input row, from column iw0 */
                const int64_t iw0 = ow * SW + kw * g->dw - g->pl;
                const int64_t lo = iw0 >= 0 ? 0 : min64(run, cdiv(-iw0, SW));
                const int64_t hi = iw0 >= g->w ? lo : max64(lo, min64(run, cdiv(g->w - iw0, SW)));
                T *dst = panel + kw * WD + i;
                const T *src = x_img + iw0 + lo * SW;
                for (int64_t c = 0; c < CG; c++)
                    for (int64_t kh = 0; kh < KH; kh++, dst += KW * WD) {
                        const int64_t ih = oh * g->sh + kh * g->dh - g->pt;
                        if (ih < 0 || ih >= g->h) {
                            FN(zero_channels)(dst, run);
                            continue;
                        }
                        FN(zero_channels)(dst, lo);
                        FN(copy_strided)(dst + lo, src + c * plane + ih * g->w, hi - lo, SW);
                        FN(zero_channels)(dst + hi, run - hi);
                    }
            }
            i += run;
            ow = 0;
            oh++;
        }
        if (cnt < WD)
            for (int64_t k = 0; k < K; k++)
                FN(zero_channels)(panel + k * WD + cnt, WD - cnt);
    }
}

/* NCHW (not depthwise) as the GEMM W (OCg x K, the OIHW weights read in place as A rows) *
 * im2col (K x pixels): each output channel is a contiguous row of the NCHW result, so nothing
 * is transposed, and the weights need no packing. Rows [p0, p1) of the batch's pixels, one
 * group; the im2col panels are lowered s->wx_panels at a time (a cache-sized block), just
 * before the GEMM uses them. */
static int64_t FN(wx_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                           const T *x, T *y, int64_t group, int64_t p0, int64_t p1, T *panels,
                           T *cbuf)
{
    const i2r_layout *L = &w->L;
    const int64_t NR = L->nr, CG = L->cg, OCG = L->ocg, K = L->k, opix = g->oh * g->ow;
    const T *a = (const T *)w->rows + group * OCG * K;
    const T *bias = w->bias ? (const T *)w->bias + group * L->npanels * NR : NULL;
    const k_run all = {0, 0, K};
    const int cflags = GEMM_ROW_BIAS | (s->stream ? GEMM_STREAM : 0);
    /* Weight rows a multiple of 4 KiB apart (1024 or 2048 input channels of a 1x1 layer)
     * would share one L1 set: the GEMM copies each A block to rows that do not (Zen 4, 1
     * thread, one-off 1x1 at 14x14: 1024->256 1.32 ms against 0.98 at 1016 channels). */
    const int64_t ts = (int64_t)sizeof(T);
    FN(lowering) copy = {NULL, 0, 0, 0, 0, panels + round_up64(s->wx_panels * K * NR * ts) / ts};
    const FN(lowering) *lowp = a_row_stride(K, ts) != K ? &copy : NULL;
    for (int64_t p = p0; p < p1;) {
        const int64_t n = p / opix, end = min64(p1, (n + 1) * opix);
        const T *x_img = x + (n * g->c + group * CG) * g->h * g->w;
        T *yb = y + (n * g->oc + group * OCG) * opix + p - n * opix;
        /* A streamed tile row is NR pixels of one channel. Where the output's channel rows
         * start off a cache line but all at the same offset (out= from NumPy is 16-byte
         * aligned), the pixels up to the first line boundary go first, with plain stores, so
         * that every tile after them streams whole lines: a line streamed in parts by two
         * tiles reaches memory as two read-modify-writes (3->64 3x3 at 180x320 into such an
         * out=, Zen 4, 1 thread: 5.1 -> 2.4 ms). The sums are the same either way. */
        int64_t head = 0;
        if (s->stream && !s->rows_out)
            head = min64(end - p, (int64_t)(-(uintptr_t)yb % 64) / (int64_t)sizeof(T));
        for (int part = 0; part < 2; part++) {
            const int64_t q0 = p - n * opix + (part ? head : 0);
            const int64_t npix = part ? end - p - head : head, np = cdiv(npix, NR);
            T *yq = yb + (part ? head : 0);
            for (int64_t b0 = 0; b0 < np; b0 += s->wx_panels) {
                const int64_t nb = min64(s->wx_panels, np - b0);
                const int64_t cols = min64(nb * NR, npix - b0 * NR);
                FN(lower_panels)(g, x_img, CG, NR, q0, npix, b0, nb, panels);
                if (s->rows_out) {   /* staged: each channel's row streamed out whole */
                    const int64_t ldb = s->wx_panels * NR;
                    FN(gemm_blocked)(w, OCG, a, K, &all, NULL, 1, panels, bias, cbuf, ldb, 0, nb,
                                     cols, cflags & ~GEMM_STREAM, g, lowp, 0, NULL);
                    for (int64_t o = 0; o < OCG; o++)
                        L->FN(k).stream_copy(yq + b0 * NR + o * opix, cbuf + o * ldb,
                                             (size_t)cols * sizeof(T));
                    continue;
                }
                FN(gemm_blocked)(w, OCG, a, K, &all, NULL, 1, panels, bias, yq + b0 * NR, opix, 0,
                                 nb, cols, part ? cflags : cflags & ~GEMM_STREAM, g, lowp, 0,
                                 NULL);
            }
        }
        p = end;
    }
    return (p1 - p0) * K;
}

