/* I2R_STRIP, the reusable im2row strip. Included by conv.c per dtype (T and SFX
 * defined; see driver.h).
 *
 * The strip (method I2R_STRIP), for one image, one group and a run of output columns:
 *
 *   strip row r (padded input row r), KW slots of Cg channels:   [slot 0 | slot 1 | slot 2]
 *   im2row row oh of output column j = the KH*KW*Cg values from strip row oh*sh on
 *   (rows overlap: nothing is copied to form them); for dh > 1 its KH segments of KW*Cg
 *   values are dh*KW*Cg apart.
 *
 * Kernel tap kw of column j reads padded input column j*sw + kw*dw. Output columns j and j+t
 * share taps when t*sw = m*dw (t = dw/gcd(sw, dw), m = sw/gcd(sw, dw)): tap kw+m of j is tap
 * kw of j+t. So columns are walked in chains j = r, r+t, r+2t, ... and the taps of chain
 * position q sit in slots rotated by rot = q*m mod KW (tap kw in slot (kw + rot) mod KW): a
 * step writes only the m new taps, into the slots of the m that left. The weights are packed
 * once per rotation (multiples of gcd(m, KW)) for kernels of fewer than RUN_MIN_CHANNELS
 * channels (depthwise ones never run on a strip: depthwise.template.h); wider kernels keep
 * one copy and walk the rotated slots in tap order as K runs (strip_runs in plan.c). Either
 * way the strip is never shifted. When m >= KW consecutive columns share nothing and every
 * step refills all KW slots (rotation 0).
 */

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
        for (int64_t cb = 0; cb < CG; cb += L->FN(k).tr)
            for (int64_t h = 0; h < rows; h++)
                FN(transpose)(L, first + cb * plane + h * g->w, min64(L->FN(k).tr, CG - cb),
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
        FN(copy_channel_rows)(dst, KW * CG, in, stride, rows, CG);
    }
    return rows * CG;
}


/* One strip task: output columns at positions [p0, p1) of images [n0, n0 + nimg) (a stack,
 * see make_schedule), group `group`, output channels of weight panels [pa, pb). runs, rows:
 * room for 2*KH K runs and their GEMM rows (strip_runs). */
static int64_t FN(strip_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                              const T *x, T *y, int64_t group, int64_t n0, int64_t nimg,
                              int64_t p0, int64_t p1, int64_t pa, int64_t pb, T *strip,
                              T *cbuf, T *stage, k_run *runs, row_range *run_rows)
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
    /* the kernel rows that read top or bottom padding left out: one image's rows only */
    row_range *rows = nimg == 1 && strip_skips_padding_rows(L, g) ? run_rows : NULL;
    int64_t copied = 0, r, q, nbuf = 0, j0 = 0;
    /* rows_out (make_schedule) only where the column's own stores would split lines: an
     * output that is not 64-byte aligned, or pixels that are not whole lines */
    const int rows_out = s->rows_out && ((uintptr_t)y | (uintptr_t)g->oc * sizeof(T)) % 64;
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
        const int64_t nruns = strip_runs(L, g, rot, j, runs, rows);
        if (g->nhwc && s->stack == 1 && !rows_out) {   /* straight into the output column */
            FN(multiply)(w, M, strip, g->sh * row, runs, rows, nruns, bpack, bias,
                         y + n0 * y_image + j * g->oc + group * OCG, g->ow * g->oc, pa, pb,
                         s->stream ? GEMM_STREAM : 0, NULL);
        } else if (g->nhwc && !rows_out) {   /* stacked: each image's valid rows out */
            FN(multiply)(w, M, strip, g->sh * row, runs, rows, nruns, bpack, bias,
                         cbuf, OCG, pa, pb, 0, NULL);
            for (int64_t b = 0; b < nimg; b++)
                for (int64_t oh = 0; oh < g->oh; oh++)
                    memcpy(y + (n0 + b) * y_image + (oh * g->ow + j) * g->oc + group * OCG,
                           cbuf + (b * block_gemm_rows + oh) * OCG, (size_t)OCG * sizeof(T));
        } else {   /* NCHW or rows_out: gathered, row oh of column j at cbuf[oh][nbuf] */
            FN(multiply)(w, M, strip, g->sh * row, runs, rows, nruns, bpack, bias,
                         cbuf + nbuf * OCG, s->jb * OCG, pa, pb, 0, NULL);
            if (nbuf++ == 0)
                j0 = j;
        }
        if (++q == len) { q = 0; r++; }
        if (rows_out && (nbuf == s->jb || p + 1 == p1)) {
            /* nbuf pixels of each output row from column j0 on (one group, col_step 1),
             * their whole lines streamed */
            for (int64_t oh = 0; oh < g->oh; oh++)
                L->FN(k).stream_copy(y + n0 * y_image + (oh * g->ow + j0) * g->oc,
                                     cbuf + oh * s->jb * OCG, (size_t)(nbuf * OCG) * sizeof(T));
            nbuf = 0;
        }
        /* flush NCHW columns when the buffer is full, at a chain's end or the task's end */
        if (!g->nhwc && (nbuf == s->jb || q == 0 || p + 1 == p1)) {
            /* columns j0, j0+t, ... of rows 0..OH-1 of each image: cbuf[row][jj][oc] ->
             * y[oc][oh][j], TR channels at a time down all rows (TR store streams) */
            const int64_t plane = g->oh * g->ow, oc_end = min64(pb * L->nr, OCG);
            for (int64_t b = 0; b < nimg; b++) {
                T *yg = y + (n0 + b) * y_image + group * OCG * plane + j0;
                const T *rows = cbuf + b * block_gemm_rows * s->jb * OCG;
                for (int64_t ob = pa * L->nr; ob < oc_end; ob += L->FN(k).tr)
                    for (int64_t oh = 0; oh < g->oh; oh++)
                        FN(transpose)(L, rows + oh * s->jb * OCG + ob, nbuf,
                                      min64(L->FN(k).tr, oc_end - ob), OCG,
                                      yg + ob * plane + oh * g->ow, plane, t);
            }
            nbuf = 0;
        }
    }
    return copied;
}

