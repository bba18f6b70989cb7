/* Depthwise convolution (I2R_STRIP): NCHW input one padded channel plane at a time, NHWC
 * input through a ring of padded rows. Included by conv.c per dtype (T and SFX defined; see
 * driver.h). */

/* Depthwise on NCHW, channels [c0, c1) of one image: each channel's input rows are copied
 * into the padded plane (zeroed once; nothing else is written there), split by column phase
 * when the stride is wider than 1 (see dwconv_ukernel.template.h), then the dwplane
 * microkernel convolves the plane. */
static int64_t FN(plane_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                              const T *x_img, T *y_img, int64_t c0, int64_t c1, T *plane, T *wc)
{
    const i2r_layout *L = &w->L;
    const KFN(dwplane) dwplane = L->FN(k).dwplane;
    const int64_t PC = s->plane_row, PH = s->plane_phase, SW = g->sw;
    const int64_t rows = strip_input_rows(g, s->strip_rows);
    const int64_t cols = plane_input_cols(g, s), taps = g->kh * g->kw, C = L->cg;
    const T *packed = (const T *)w->packed, *bias = (const T *)w->bias;   /* [kh][kw][c] */
    for (int64_t c = c0; c < c1; c++) {
        for (int64_t h = 0; h < rows; h++) {
            T *dst = plane + (g->pt + h) * PC;
            const T *src = x_img + (c * g->h + h) * g->w;
            if (SW == 1) {
                FN(copy_channels)(dst + g->pl, src, cols);
                continue;
            }
            for (int64_t i0 = 0; i0 < min64(SW, cols); i0++) {   /* one phase at a time */
                const int64_t col = g->pl + i0, count = (cols - i0 + SW - 1) / SW;
                FN(copy_strided)(dst + col % SW * PH + col / SW, src + i0, count, SW);
            }
        }
        for (int64_t t = 0; t < taps; t++)
            wc[t] = packed[t * C + c];
        dwplane((size_t)g->oh, (size_t)g->ow, (size_t)g->kh, (size_t)g->kw, (size_t)g->sh,
                (size_t)g->sw, (size_t)g->dh, (size_t)g->dw, plane, (size_t)PC, (size_t)PH, wc,
                bias ? bias[c] : (T)0, y_img + c * g->oh * g->ow, w->relu);
    }
    return (c1 - c0) * rows * cols;
}


/* Depthwise, output rows [r0, r1) of one image: the ring holds the padded input rows (all
 * channels, NHWC-ordered; padding columns zeroed once) that one output row reads, row p in
 * slot p mod ring_rows, each filled when first read; the dwrow microkernel computes each
 * output row from its KH rows. NCHW input rows are transposed into the ring (TR channels at
 * a time) and each output row out of a row buffer. Scratch after the ring: the padded row
 * each slot holds, the KH row pointers, and (NCHW) the output row. */
static int64_t FN(ring_task)(const struct i2r_weights *w, const i2r_geom *g, const schedule *s,
                             const T *x_img, T *y_img, int64_t r0, int64_t r1, T *ring)
{
    const i2r_layout *L = &w->L;
    const KFN(dwrow) dwrow = L->FN(k).dwrow;
    const int64_t C = L->cg, RR = s->ring_rows, cols = plane_input_cols(g, s);
    const int64_t left = min64(g->pl, s->plane_cols), plane = g->h * g->w;
    const int64_t ring_bytes = round_up64(RR * s->plane_row * (int64_t)sizeof(T));
    int64_t *held = (int64_t *)((char *)ring + ring_bytes);   /* padded row in each slot */
    const T **rows = (const T **)(held + RR);
    T *orow = (T *)((char *)held + round_up64((RR + g->kh) * 8));   /* NCHW only */
    const T *packed = (const T *)w->packed, *bias = (const T *)w->bias;   /* [kh][kw][c] */
    int64_t filled = 0;
    for (int64_t i = 0; i < RR; i++)
        held[i] = -1;
    for (int64_t oh = r0; oh < r1; oh++) {
        for (int64_t a = 0; a < g->kh; a++) {
            const int64_t p = oh * g->sh + a * g->dh, ih = p - g->pt;
            T *row = ring + p % RR * s->plane_row;
            if (held[p % RR] != p) {   /* first read (the row it replaces is read no more) */
                held[p % RR] = p;
                if (ih < 0 || ih >= g->h)
                    FN(zero_channels)(row + left * C, cols * C);
                else if (g->nhwc)
                    FN(copy_channels)(row + left * C, x_img + ih * g->w * C, cols * C);
                else
                    FN(transpose)(L, x_img + ih * g->w, C, cols, plane, row + left * C, C, 1);
                filled += ih >= 0 && ih < g->h;
            }
            rows[a] = row;
        }
        T *out = g->nhwc ? y_img + oh * g->ow * C : orow;
        dwrow((size_t)g->ow, (size_t)C, (size_t)g->kh, (size_t)g->kw, (size_t)g->sw,
              (size_t)g->dw, rows, packed, bias, out, w->relu);
        if (!g->nhwc)
            FN(transpose)(L, orow, g->ow, C, C, y_img + oh * g->ow, g->oh * g->ow, 1);
    }
    return filled * cols * C;
}
