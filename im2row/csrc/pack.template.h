/* Weight packing, included by pack.c per dtype (T, SFX defined). */

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
