/* One GEMM microkernel (contract in gemm.h), instantiated by defining before inclusion:
 *   T, V (vector type), VN (lanes), MR (rows), NRV (vectors per row: NR = NRV*VN), KNAME,
 *   V_ZERO(), V_LOAD(p), V_LOAD_N(p, n), V_STORE(p, v), V_STORE_N(p, v, n) (first n lanes),
 *   V_BCAST(p) (broadcast *p), V_FMA(a, b, acc) (a*b + acc), V_MAX(a, b) (b where either
 *   is NaN, as x86's maxps: ReLU is V_MAX(0, x), so NaN passes as in np.maximum and
 *   torch.relu), V_STREAM(p, v) (non-temporal store, p vector-aligned) and optionally
 *   V_STREAM16(p, v) (the same with 16-byte alignment only).
 * The loops over MR and NRV have constant bounds and are fully unrolled, so acc[][] lives in
 * registers (14x32 f32 on AVX-512: 28 zmm accumulators, 2 B loads and 14 broadcasts per
 * 28 FMAs). Include dwconv_ukernel.template.h right after it: it reuses the macros.
 */
#define NR_ (NRV * VN)
#define TAIL_SHORT ((MR + 2) / 3)        /* row counts of the partial-tile loops */
#define TAIL_MID ((2 * MR + 2) / 3)
#ifdef V_STREAM16
#define STREAM_ALIGN 16
#else   /* streams only vector-aligned results */
#define STREAM_ALIGN sizeof(V)
#define V_STREAM16(p, v) V_STREAM(p, v)
#endif

/* The kernel body. With bsrc (the deferred form packing, one segment), B is read from the
 * weight rows at bsrc + k*ldb (nr columns, the rest zero) and copied into the panel at bdst
 * as it is multiplied; else from the packed panels at b. pf: the deferred form's prefetch
 * stream. Inlined into each public form with constant bsrc/bdst/pf, so the plain forms carry
 * none of it. */
static inline __attribute__((always_inline)) void GEMM_BODY_NAME(KNAME)(
    size_t mr, size_t nr, size_t nseg, const gemm_seg *seg, const T *a, size_t lda,
    const T *b, T *c, size_t ldc, const T *bias, int flags, const T *bsrc, size_t ldb,
    T *bdst, const gemm_stream *pf)
{
    const T *ap[MR];
    T *cp[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        size_t r = (size_t)i < mr ? (size_t)i : mr - 1;   /* tail rows alias the last row */
        ap[i] = a + r * lda;
        cp[i] = c + r * ldc;
    }
    /* lanes stored in vector v: VN for full vectors, fewer at the OC tail, 0 past it */
    int lanes[NRV];
#pragma GCC unroll 4
    for (int v = 0; v < NRV; v++) {
        long left = (long)nr - (long)v * VN;
        lanes[v] = left >= VN ? VN : (left > 0 ? (int)left : 0);
    }

    /* the stream's cursor (gemm_stream): nothing to prefetch without one */
    const char *srow = pf ? pf->p : NULL;
    size_t sline = pf ? pf->line : 0, slpr = pf ? pf->lines_per_row : 1;
    const size_t sstride = pf ? pf->row_stride : 0, sper = pf ? pf->per_k : 0;
    size_t sleft = pf ? pf->left : 0;

    V acc[MR][NRV];
    if (flags & GEMM_ACCUMULATE) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < NRV; v++)
                acc[i][v] = lanes[v] == VN ? V_LOAD(cp[i] + v * VN)
                          : lanes[v] ? V_LOAD_N(cp[i] + v * VN, lanes[v]) : V_ZERO();
    } else {
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < NRV; v++)
                acc[i][v] = V_ZERO();
    }

    /* The k loop, for a row-pointer expression ROW(i). The weight rows B_PREFETCH steps
     * ahead are prefetched: the first row tile of a panel reads them from memory where the
     * weights do not stay cached (deep layers on small maps), and the hardware prefetcher
     * stops at every 4 KiB page. A/B, 1 thread, Xeon (Emerald Rapids): 512->512 3x3 at 7x7
     * 0.87x the time, 2048->512 1x1 at 7x7 0.94x, the 3->64 7x7 stem 0.92x, GEMM-bound
     * layers 0.97-1.0x. Past the end of B it prefetches the next panel (or nothing). */
#define B_PREFETCH 24
#define B_PACKED(k, v, dst) dst = V_LOAD(bs + (k) * NR_ + (v) * VN)
#define B_PREFETCH_PACKED(k)                                                \
    _Pragma("GCC unroll 4")                                                 \
    for (int l = 0; l < (int)((NR_ * sizeof(T) + 63) / 64); l++)            \
        __builtin_prefetch((const char *)(bs + ((k) + B_PREFETCH) * NR_) + 64 * l, 0, 3)
    /* The deferred form packing: each weight row is one or two lines B_SRC_PREFETCH rows
     * ahead, at a stride the hardware prefetcher loses at every page (rows of 1-8 KiB); far
     * enough ahead to cover a memory latency with the FMAs of the rows between. Rows past
     * kc are the next K block's, which this panel's first tile reads next. */
#define B_SRC_PREFETCH 48
#define B_SRC_FULL(k, v, dst)                                               \
    do {                                                                    \
        dst = V_LOAD(bsrc + (k) * ldb + (v) * VN);                          \
        V_STORE(bdst + (k) * NR_ + (v) * VN, dst);                          \
    } while (0)
#define B_SRC_PART(k, v, dst)                                               \
    do {                                                                    \
        dst = lanes[v] ? V_LOAD_N(bsrc + (k) * ldb + (v) * VN, lanes[v]) : V_ZERO(); \
        V_STORE(bdst + (k) * NR_ + (v) * VN, dst);                          \
    } while (0)
#define B_PREFETCH_SRC(k)                                                   \
    _Pragma("GCC unroll 4")                                                 \
    for (int l = 0; l < (int)((NR_ * sizeof(T) + 63) / 64); l++)            \
        __builtin_prefetch((const char *)(bsrc + ((k) + B_SRC_PREFETCH) * ldb) + 64 * l, 0, 2)
#define B_STREAM_PREFETCH                                                   \
    for (size_t j = 0; j < sper && sleft; j++, sleft--) {                   \
        __builtin_prefetch(srow + 64 * sline, 0, 2);                        \
        if (++sline == slpr) {                                              \
            sline = 0;                                                      \
            srow += sstride;                                                \
        }                                                                   \
    }
#define K_LOOP_B(ROWS, ROW, STEP, NV, LOAD_B, PREFETCH_B)                   \
    for (size_t k = 0; k < kc; k++) {                                       \
        V bv[NRV];                                                          \
        _Pragma("GCC unroll 4")                                             \
        for (int v = 0; v < (NV); v++)                                      \
            LOAD_B(k, v, bv[v]);                                            \
        PREFETCH_B(k);                                                      \
        B_STREAM_PREFETCH;                                                  \
        _Pragma("GCC unroll 16")                                            \
        for (int i = 0; i < (ROWS); i++) {                                  \
            V av = V_BCAST(ROW(i));                                         \
            _Pragma("GCC unroll 4")                                         \
            for (int v = 0; v < (NV); v++)                                  \
                acc[i][v] = V_FMA(av, bv[v], acc[i][v]);                    \
        }                                                                   \
        STEP;                                                               \
    }
#define K_LOOP_NV(ROWS, ROW, STEP, NV) K_LOOP_B(ROWS, ROW, STEP, NV, B_PACKED, B_PREFETCH_PACKED)
    /* A panel whose columns fit in its first half (the last panel of OCg = 40, 80, 144, 9):
     * the FMAs of half the vectors (the other half's accumulators stay zero, unstored). */
#define K_LOOP(ROWS, ROW, STEP)                                             \
    if (NRV % 2 == 0 && nr <= (size_t)(NRV / 2 * VN))                       \
        K_LOOP_NV(ROWS, ROW, STEP, NRV / 2)                                 \
    else                                                                    \
        K_LOOP_NV(ROWS, ROW, STEP, NRV)
    if (bsrc) {   /* the deferred form packing: one segment; all NRV vectors, zero past nr */
        const size_t kc = seg[0].len;
        const T *base[(MR + 2) / 3];
#pragma GCC unroll 8
        for (int j = 0; j < (MR + 2) / 3; j++)
            base[j] = a + (size_t)(3 * j) * lda;
#define ROW_FULL(i) (base[(i) / 3] + ((i) % 3) * lda)
#define STEP_FULL _Pragma("GCC unroll 8") for (int j = 0; j < (MR + 2) / 3; j++) base[j]++
#define ROW_TAIL(i) (ap[i] + k)
        if (mr == MR && nr == NR_)
            K_LOOP_B(MR, ROW_FULL, STEP_FULL, NRV, B_SRC_FULL, B_PREFETCH_SRC)
        else if (mr == MR)
            K_LOOP_B(MR, ROW_FULL, STEP_FULL, NRV, B_SRC_PART, B_PREFETCH_SRC)
        else if (nr == NR_)
            K_LOOP_B(MR, ROW_TAIL, (void)0, NRV, B_SRC_FULL, B_PREFETCH_SRC)
        else
            K_LOOP_B(MR, ROW_TAIL, (void)0, NRV, B_SRC_PART, B_PREFETCH_SRC)
#undef ROW_FULL
#undef STEP_FULL
#undef ROW_TAIL
        nseg = 0;   /* (the segment loop below is the other form's) */
    }
    for (size_t s = 0; s < nseg; s++) {
        const T *bs = b + seg[s].b * NR_;
        const size_t sa = seg[s].a, kc = seg[s].len;
        if (mr == MR) {
            /* Full tile: rows at a + i*lda, addressed from a base every 3 rows plus 0, 1 or
             * 2 lda (one scaled index register), so the row addresses fit in the general
             * registers instead of 14 pointers spilled to the stack. */
            const T *base[(MR + 2) / 3];
#pragma GCC unroll 8
            for (int j = 0; j < (MR + 2) / 3; j++)
                base[j] = a + sa + (size_t)(3 * j) * lda;
#define ROW_FULL(i) (base[(i) / 3] + ((i) % 3) * lda)
#define STEP_FULL _Pragma("GCC unroll 8") for (int j = 0; j < (MR + 2) / 3; j++) base[j]++
            K_LOOP(MR, ROW_FULL, STEP_FULL)
#undef ROW_FULL
#undef STEP_FULL
        } else {
            /* A tile of fewer rows (the last of M, a band of rows): the FMAs of the first
             * TAIL_SHORT, TAIL_MID or MR rows, the fewest that cover mr (a 1-row tail of a
             * 13x13 map no longer costs 14); the rows past them are neither computed nor
             * stored. */
#define ROW_TAIL(i) (ap[i] + sa + k)
            if (mr <= TAIL_SHORT)
                K_LOOP(TAIL_SHORT, ROW_TAIL, (void)0)
            else if (mr <= TAIL_MID)
                K_LOOP(TAIL_MID, ROW_TAIL, (void)0)
            else
                K_LOOP(MR, ROW_TAIL, (void)0)
#undef ROW_TAIL
        }
    }
#undef K_LOOP
#undef K_LOOP_NV
#undef K_LOOP_B
#undef B_PACKED
#undef B_PREFETCH_PACKED
#undef B_SRC_FULL
#undef B_SRC_PART
#undef B_PREFETCH_SRC
#undef B_SRC_PREFETCH
#undef B_STREAM_PREFETCH
#undef B_PREFETCH

    if (flags & GEMM_EPILOGUE) {
        if (bias && (flags & GEMM_ROW_BIAS)) {
#pragma GCC unroll 16
            for (int i = 0; i < MR; i++) {
                V bb = V_BCAST(bias + ((size_t)i < mr ? (size_t)i : mr - 1));
#pragma GCC unroll 4
                for (int v = 0; v < NRV; v++)
                    acc[i][v] = acc[i][v] + bb;
            }
        } else if (bias) {
#pragma GCC unroll 4
            for (int v = 0; v < NRV; v++) {
                V bb = V_LOAD(bias + v * VN);
#pragma GCC unroll 16
                for (int i = 0; i < MR; i++)
                    acc[i][v] = acc[i][v] + bb;
            }
        }
        if (flags & GEMM_RELU) {
#pragma GCC unroll 16
            for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
                for (int v = 0; v < NRV; v++)
                    acc[i][v] = V_MAX(V_ZERO(), acc[i][v]);   /* NaN stays NaN */
        }
    }

    /* Streamed past the caches: whole vectors where the result is vector-aligned, else 16
     * bytes at a time (NumPy's own arrays, out= included, are 16-byte aligned; plain stores
     * would read every line of a result far larger than the caches first: measured, a 15 MB
     * NHWC result 1.8 -> 1.2 ms). A line written in parts by two calls still reaches memory
     * as two read-modify-writes: where that is the rule (an unaligned output) the drivers
     * gather the results and stream whole lines instead (schedule.rows_out). */
    const uintptr_t align = (uintptr_t)c | ldc * sizeof(T);
    if ((flags & GEMM_STREAM) && nr == NR_ && align % STREAM_ALIGN == 0) {
        const int whole = align % sizeof(V) == 0;
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < NRV; v++) {
                if ((size_t)i >= mr)
                    continue;
                if (whole)
                    V_STREAM(cp[i] + v * VN, acc[i][v]);
                else
                    V_STREAM16(cp[i] + v * VN, acc[i][v]);
            }
        return;
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NRV; v++) {
            if ((size_t)i >= mr)   /* rows past mr: not computed */
                continue;
            if (lanes[v] == VN)
                V_STORE(cp[i] + v * VN, acc[i][v]);
            else if (lanes[v])
                V_STORE_N(cp[i] + v * VN, acc[i][v], lanes[v]);
        }
}

void GEMM_SEGS_NAME(KNAME)(GEMM_SEGS_ARGS(T))
{
    GEMM_BODY_NAME(KNAME)(mr, nr, nseg, seg, a, lda, b, c, ldc, bias, flags, NULL, 0, NULL,
                          NULL);
}

/* The plain form: one segment of kc values, and any number of rows: tiles of MR rows down
 * A and C against the same panel, in one call. Short K (3-channel stems, K = 27; 1x1
 * layers of 16-32 channels) spent more of its time in the call and the tile's set-up than
 * in its FMAs when each tile was a call of its own. */
void KNAME(size_t mr, size_t nr, size_t kc, const T *a, size_t lda, const T *b, T *c,
           size_t ldc, const T *bias, int flags)
{
    const gemm_seg one = {0, 0, kc};
    const int row_bias = bias && (flags & GEMM_ROW_BIAS);
    for (size_t i = 0; i < mr; i += MR)
        GEMM_BODY_NAME(KNAME)(mr - i < MR ? mr - i : MR, nr, 1, &one, a + i * lda, lda, b,
                              c + i * ldc, ldc, row_bias ? bias + i : bias, flags, NULL, 0,
                              NULL, NULL);
}

void GEMM_DEFERRED_NAME(KNAME)(GEMM_DEFERRED_ARGS(T))
{
    const gemm_seg one = {0, 0, kc};
    if (bsrc)
        GEMM_BODY_NAME(KNAME)(mr, nr, 1, &one, a, lda, NULL, c, ldc, bias, flags, bsrc, ldb, b,
                              pf);
    else
        GEMM_BODY_NAME(KNAME)(mr, nr, 1, &one, a, lda, b, c, ldc, bias, flags, NULL, 0, NULL,
                              pf);
}

#undef NR_
#undef TAIL_SHORT
#undef TAIL_MID
#undef STREAM_ALIGN
/* the vector macros stay defined for dwconv_ukernel.template.h, which undefines them */
