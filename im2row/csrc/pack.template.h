/* Weight packing, included by pack.c per dtype (T and SFX defined). The source is read in
 * place through its strides (i2r.h), in either layout, each value once, and written to every
 * rotation's copy from that one read. */

#define W_AT(g, kh, kw, c, oc) (w + (g) * ws[0] + (kh) * ws[1] + (kw) * ws[2] + (c) * ws[3] + \
                                (oc) * ws[4])

/* Row of tap t = kh*KW + kw, channel 0, in rotation r's copy of a panel:
 * (kh*KW + slot)*Cg with slot = (kw + r*rot_unit) mod KW. */
static inline int64_t FN(tap_row)(const i2r_layout *L, int64_t t, int64_t r)
{
    return (t - t % L->kw + (t % L->kw + r * L->rot_unit) % L->kw) * L->cg;
}

/* HWIO sources (output channels contiguous), rows [k0, k1) in source order (kh, kw, c) of
 * every panel and rotation of group g, read once, in memory order: a panel-by-panel walk,
 * strided through the source, measured 4x slower. Row (kh*KW + slot)*Cg + c of rotation r's
 * copy of panel p holds w[kh][kw][c][p*NR : p*NR + NR], zeros past OCg. */
static void FN(pack_rows_hwio)(const i2r_layout *L, const T *w, const int64_t *ws, int64_t g,
                               int64_t k0, int64_t k1, T *packed)
{
    const int64_t NR = L->nr, CG = L->cg, OCG = L->ocg, K = L->k;
    const int64_t rot_size = L->npanels * K * NR;
    T *group = packed + g * L->nrot * rot_size;
    for (int64_t k = k0; k < k1; k++) {
        const int64_t t = k / CG, c = k % CG;
        const T *src = W_AT(g, t / L->kw, t % L->kw, c, 0);
        for (int64_t r = 0; r < L->nrot; r++) {
            T *dst = group + r * rot_size + (FN(tap_row)(L, t, r) + c) * NR;
            for (int64_t p = 0; p < L->npanels; p++, dst += K * NR, src += NR) {
                const int64_t width = min64(NR, OCG - p * NR);
                if (width == NR) {
                    for (int64_t i = 0; i < NR; i++)   /* constant trip: vectorised */
                        dst[i] = src[i];
                } else {
                    for (int64_t i = 0; i < NR; i++)
                        dst[i] = i < width ? src[i] : (T)0;
                }
            }
            src -= L->npanels * NR;
        }
    }
}

/* Other sources (OIHW: each output channel's K values contiguous, in (c, kh, kw) order):
 * source values [k0, k1) of panel p of group g, every rotation: a transpose, TR source values
 * at a time through the ISA's TR x TR register transpose (rows of the source's memory order
 * in) into TR whole packed rows, each then copied to its place in each rotation: whole rows,
 * since writing TR-wide quarters of them in separate passes made the stores miss.
 * tap_rows[r*KH*KW + t] = tap_row(t, r), computed once per call (no division per value). */
static void FN(pack_values_oihw)(const i2r_layout *L, const T *w, const int64_t *ws,
                                 const int64_t *tap_rows, int64_t g, int64_t p, int64_t k0,
                                 int64_t k1, T *packed)
{
    const int64_t NR = L->nr, K = L->k, TAPS = L->kh * L->kw, TR = L->FN(k).tr;
    const int64_t oc0 = p * NR, width = min64(NR, L->ocg - oc0);
    const int64_t rot_size = L->npanels * K * NR;
    const int contiguous = ws[2] == 1 && ws[1] == L->kw && ws[3] == TAPS;
    T *panel = packed + g * L->nrot * rot_size + p * K * NR;
    T tile[16 * 32];   /* TR <= 16 packed rows of NR <= 32 values (f32 AVX-512's tile) */
    for (int64_t kb = k0; kb < k1; kb += TR) {
        const int64_t cols = min64(TR, k1 - kb);
        for (int64_t i0 = 0; i0 < NR; i0 += TR) {
            const int64_t rows = min64(TR, width - i0);   /* output channels of this tile */
            if (rows == TR && cols == TR && contiguous) {
                /* TR rows read side by side, K values apart: more streams than the
                 * hardware prefetchers follow (Zen 3, one-off NCHW 512->512 3x3 at 7x7,
                 * 1 thread: the call 1.12-1.26x faster, interleaved A/B) */
                if (kb * (int64_t)sizeof(T) % 64 == 0)   /* once per cache line */
                    for (int64_t i = 0; i < TR; i++)
                        __builtin_prefetch((const char *)(W_AT(g, 0, 0, 0, oc0 + i0 + i) + kb)
                                           + PACK_PREFETCH_BYTES, 0, 2);
                L->FN(k).transpose(W_AT(g, 0, 0, 0, oc0 + i0) + kb, (size_t)ws[4], tile + i0,
                                   (size_t)NR);
            } else {   /* edges, zero columns past OCg, or other strides */
                for (int64_t j = 0; j < cols; j++) {
                    const int64_t k = kb + j, c = k / TAPS, t = k % TAPS;
                    for (int64_t i = 0; i < TR; i++)
                        tile[j * NR + i0 + i] = i < rows
                            ? *W_AT(g, t / L->kw, t % L->kw, c, oc0 + i0 + i) : (T)0;
                }
            }
        }
        int64_t c = kb / TAPS, t = kb % TAPS;
        for (int64_t j = 0; j < cols; j++) {
            for (int64_t r = 0; r < L->nrot; r++)
                memcpy(panel + r * rot_size + (tap_rows[r * TAPS + t] + c) * NR, tile + j * NR,
                       sizeof(T) * (size_t)NR);
            if (++t == TAPS) { t = 0; c++; }
        }
    }
}

/* One packing task (see pack_weights): PACK_TASK_ROWS source values of a group, of every
 * panel (HWIO) or of one (OIHW). */
static void FN(pack_task)(const i2r_layout *L, const T *w, const int64_t *ws,
                          const int64_t *tap_rows, int hwio, int64_t per_group,
                          int64_t per_panel, int64_t task, T *packed)
{
    int64_t g = task / per_group, i = task % per_group % per_panel;
    int64_t k0 = i * PACK_TASK_ROWS, k1 = min64(L->k, k0 + PACK_TASK_ROWS);
    if (hwio)
        FN(pack_rows_hwio)(L, w, ws, g, k0, k1, packed);
    else
        FN(pack_values_oihw)(L, w, ws, tap_rows, g, task % per_group / per_panel, k0, k1,
                             packed);
}

/* Packed weights: [G][nrot][npanels][K][NR] panels (above); depthwise: one (KH*KW, C) block
 * (nrot = 1), tap (kh, kw) holding w[c][kh][kw] for every channel c; bias padded to whole
 * panels. Panels are
 * packed by up to nthreads threads when there is enough to share. */
static i2r_status FN(pack_weights)(const i2r_layout *L, const T *w, const int64_t *ws,
                                   const T *bias, T *packed, T *packed_bias, int nthreads)
{
    const int64_t NR = L->nr, KW = L->kw, CG = L->cg, OCG = L->ocg;
    if (L->depthwise) {   /* C groups of one channel: channel c is group c; no rotations */
        T *dst = packed;
        for (int64_t kh = 0; kh < L->kh; kh++)
            for (int64_t kw = 0; kw < KW; kw++, dst += CG) {
                if (ws[0] == 1)   /* HWIO: the tap's channels are a contiguous row already */
                    memcpy(dst, W_AT(0, kh, kw, 0, 0), (size_t)CG * sizeof(T));
                else
                    for (int64_t c = 0; c < CG; c++)
                        dst[c] = *W_AT(c, kh, kw, 0, 0);
            }
        if (bias)
            memcpy(packed_bias, bias, (size_t)CG * sizeof(T));
        return I2R_OK;
    }
    if (packed) {
        /* tasks of PACK_TASK_ROWS source values: of every panel (HWIO) or of one (OIHW) */
        const int hwio = ws[4] == 1, TAPS = (int)(L->kh * L->kw);
        const int64_t per_panel = cdiv(L->k, PACK_TASK_ROWS);
        const int64_t per_group = hwio ? per_panel : L->npanels * per_panel;
        const int64_t ntasks = L->groups * per_group;
        const int64_t bytes = L->groups * L->nrot * rotation_size(L) * (int64_t)sizeof(T);
        int64_t *tap_rows = hwio ? NULL : malloc((size_t)(L->nrot * TAPS) * sizeof *tap_rows);
        if (!hwio && !tap_rows)
            return I2R_ENOMEM;
        for (int64_t i = 0; !hwio && i < L->nrot * TAPS; i++)
            tap_rows[i] = FN(tap_row)(L, i % TAPS, i / TAPS);
        /* threads only for large weights, and no OpenMP region at all otherwise: a
         * one-thread region between the convolution's two-thread ones made libgomp retire
         * and wake its worker on every call (measured: conv2d at 2 threads 2.4 -> 4.1 ms) */
        if (nthreads > 1 && bytes > PACK_PARALLEL_BYTES) {
#ifdef I2R_HAVE_OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
#endif
            for (int64_t task = 0; task < ntasks; task++)
                FN(pack_task)(L, w, ws, tap_rows, hwio, per_group, per_panel, task, packed);
        } else {
            for (int64_t task = 0; task < ntasks; task++)
                FN(pack_task)(L, w, ws, tap_rows, hwio, per_group, per_panel, task, packed);
        }
        free(tap_rows);
    }
    if (bias)
        for (int64_t g = 0; g < L->groups; g++)
            for (int64_t j = 0; j < L->npanels * NR; j++)
                packed_bias[g * L->npanels * NR + j] = j < OCG ? bias[g * OCG + j] : (T)0;
    return I2R_OK;
}
#undef W_AT
