/* Depthwise convolution (I2R_STRIP): NCHW input one channel at a time through its padded
 * phase planes, NHWC input through a ring of padded rows. Included by conv.c per dtype (T and
 * SFX defined; see driver.h). */

/* Depthwise on NCHW, channels [c0, c1) of one image: the dwplane microkernel copies each
 * channel into its phase planes (zeroed once; only the input's values are written there) and
 * convolves them (gemm.h). Scratch: the planes, then the block of outputs, the channel's
 * weights and the taps' offsets. */
static int64_t FN(plane_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                              const T *x_img, T *y_img, int64_t c0, int64_t c1, T *scratch)
{
    const i2r_layout *L = &w->L;
    const KFN(dwplane) dwplane = L->FN(k).dwplane;
    const int64_t rows = strip_input_rows(g, s->strip_rows), cols = plane_input_cols(g, s);
    const int64_t taps = g->kh * g->kw, C = L->cg, ts = (int64_t)sizeof(T);
    const int64_t wide_bytes = round_up64(s->plane_block_rows * s->plane_phase * ts +
                                          DWPLANE_OVERRUN_BYTES);
    T *wide = scratch + s->plane_bytes / ts, *wc = wide + wide_bytes / ts;
    size_t *tap_offset = (size_t *)(wc + round_up64(taps * ts) / ts);
    const T *packed = (const T *)w->packed, *bias = (const T *)w->bias;   /* [kh][kw][c] */
    const int64_t sub = s->plane_sub_rows * s->plane_phase;
    for (int64_t a = 0; a < g->kh; a++)   /* gemm.h's tap runs */
        for (int64_t b = 0; b < g->kw; b++)
            tap_offset[a * g->kw + b] = (size_t)(((a * g->dh % g->sh) * g->sw +
                                                  b * g->dw % g->sw) * sub +
                                                 a * g->dh / g->sh * s->plane_phase +
                                                 b * g->dw / g->sw);
    const dwplane_geom pg = {
        .w = (size_t)g->w, .oh = (size_t)g->oh, .ow = (size_t)g->ow, .kh = (size_t)g->kh,
        .kw = (size_t)g->kw, .sh = (size_t)g->sh, .sw = (size_t)g->sw, .pt = (size_t)g->pt,
        .pl = (size_t)g->pl,
        .in_rows = (size_t)rows, .in_cols = (size_t)cols, .q = (size_t)s->plane_phase,
        .sub_rows = (size_t)s->plane_sub_rows, .block_rows = (size_t)s->plane_block_rows,
        .tap_offset = tap_offset};
    for (int64_t c = c0; c < c1; c++) {
        for (int64_t t = 0; t < taps; t++)
            wc[t] = packed[t * C + c];
        dwplane(&pg, x_img + c * g->h * g->w, scratch, wide, wc, bias ? bias[c] : (T)0,
                y_img + c * g->oh * g->ow, w->relu);
    }
    return (c1 - c0) * rows * cols;
}


/* Depthwise, output rows [r0, r1) of one image: the ring holds the padded input rows (all
 * channels, NHWC-ordered; padding columns zeroed once) that one output row reads, row p in
 * slot p mod ring_rows, each filled when first read; the dwrow microkernel computes each
 * output row from its KH rows. NCHW goes ring_chunk output rows at a time: the input rows
 * they read are transposed into `in` at once, and their output rows, gathered in `out`,
 * transposed into the result at once (one transpose per row of a 7- or 14-wide map left
 * most of it to the scalar edge loop). Scratch after the ring: the padded row each
 * slot holds, the KH row pointers, and (NCHW) `in` and `out`. */
static int64_t FN(ring_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                             const T *x_img, T *y_img, int64_t r0, int64_t r1, T *ring)
{
    const i2r_layout *L = &w->L;
    const KFN(dwrow) dwrow = L->FN(k).dwrow;
    const int64_t C = L->cg, RR = s->ring_rows, cols = plane_input_cols(g, s);
    const int64_t left = min64(g->pl, s->plane_cols), opix = g->oh * g->ow;
    const int64_t ring_bytes = round_up64(RR * s->plane_row * (int64_t)sizeof(T));
    int64_t *held = (int64_t *)((char *)ring + ring_bytes);   /* padded row in each slot */
    const T **rows = (const T **)(held + RR);
    T *in = (T *)((char *)held + round_up64((RR + g->kh) * 8));   /* NCHW only */
    T *out = in + round_up64(ring_chunk_in_rows(g, s) * g->w * C * (int64_t)sizeof(T)) /
                  (int64_t)sizeof(T);
    const T *packed = (const T *)w->packed, *bias = (const T *)w->bias;   /* [kh][kw][c] */
    int64_t filled = 0;
    for (int64_t i = 0; i < RR; i++)
        held[i] = -1;
    for (int64_t oa = r0; oa < r1; oa += g->nhwc ? r1 - r0 : s->ring_chunk) {
        const int64_t ob = g->nhwc ? r1 : min64(r1, oa + s->ring_chunk);
        int64_t in_h0 = 0, in_h1;   /* NCHW: input rows [in_h0, in_h1) are in `in` */
        if (!g->nhwc) {   /* all the rows these output rows read: some were read before */
            rows_read(g, oa * g->ow, ob * g->ow, &in_h0, &in_h1);
            FN(transpose_rows)(L, g, x_img, C, in_h0, in_h1, in);
        }
        for (int64_t oh = oa; oh < ob; oh++) {
            for (int64_t a = 0; a < g->kh; a++) {
                const int64_t p = oh * g->sh + a * g->dh, ih = p - g->pt;
                T *row = ring + p % RR * s->plane_row;
                if (held[p % RR] != p) {   /* first read (the row it replaces is read no more) */
                    held[p % RR] = p;
                    if (ih < 0 || ih >= g->h)
                        FN(zero_channels)(row + left * C, cols * C);
                    else
                        FN(copy_channels)(row + left * C, g->nhwc ? x_img + ih * g->w * C
                                          : in + (ih - in_h0) * g->w * C, cols * C);
                    filled += ih >= 0 && ih < g->h;
                }
                rows[a] = row;
            }
            dwrow((size_t)g->ow, (size_t)C, (size_t)g->kh, (size_t)g->kw, (size_t)g->sw,
                  (size_t)g->dw, rows, packed, bias,
                  g->nhwc ? y_img + oh * g->ow * C : out + (oh - oa) * g->ow * C, w->relu);
        }
        if (!g->nhwc)
            FN(transpose)(L, out, (ob - oa) * g->ow, C, C, y_img + oa * g->ow, opix, 1);
    }
    return filled * cols * C;
}
