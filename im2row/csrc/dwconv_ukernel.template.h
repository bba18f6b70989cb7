/* One depthwise-convolution microkernel (contract in gemm.h), instantiated after
 * gemm_ukernel.template.h with the same vector macros still defined, plus DWNAME, DWPLANENAME,
 * DWV (vectors of channels per block) and DWR (output pixels per call). It undefines all the
 * macros at the end.
 *
 *   out[r*ldo + c] = bias[c] + sum_t a[r*lda + tap(t) + c] * w[t*channels + c]
 *                                                        (r < m <= DWR, c < channels)
 * Taps come in nseg segments of seg_taps taps, channels contiguous in each tap:
 * tap(s*seg_taps + i) = s*seg_stride + i*channels (one strip row, or KH rows dh apart).
 * w is the packed (taps, channels) weight block of the rotation in use; bias may be NULL.
 * DWR pixels share each weight load (DWR*DWV accumulators); rows past m alias row m-1. */
/* ... and DWROWNAME, DWROW_R (output pixels of a row tile) and DWROW_NV (vectors of channels
 * of a row tile): see the row kernel below. */
void DWNAME(size_t m, size_t channels, size_t nseg, size_t seg_taps, size_t seg_stride,
            const T *a, size_t lda, const T *w, const T *bias, T *out, size_t ldo, int relu)
{
    const T *ar[DWR];
    T *orow[DWR];
#pragma GCC unroll 8
    for (int r = 0; r < DWR; r++) {
        size_t rr = (size_t)r < m ? (size_t)r : m - 1;
        ar[r] = a + rr * lda;
        orow[r] = out + rr * ldo;
    }
    size_t c0 = 0;
    for (; c0 + DWV * VN <= channels; c0 += DWV * VN) {
        V acc[DWR][DWV];
#pragma GCC unroll 8
        for (int r = 0; r < DWR; r++)
#pragma GCC unroll 8
            for (int v = 0; v < DWV; v++)
                acc[r][v] = bias ? V_LOAD(bias + c0 + v * VN) : V_ZERO();
        for (size_t sg = 0; sg < nseg; sg++)
            for (size_t i = 0; i < seg_taps; i++) {
                size_t off = sg * seg_stride + i * channels + c0;
                const T *wt = w + (sg * seg_taps + i) * channels + c0;
                V wv[DWV];
#pragma GCC unroll 8
                for (int v = 0; v < DWV; v++)
                    wv[v] = V_LOAD(wt + v * VN);
#pragma GCC unroll 8
                for (int r = 0; r < DWR; r++)
#pragma GCC unroll 8
                    for (int v = 0; v < DWV; v++)
                        acc[r][v] = V_FMA(V_LOAD(ar[r] + off + v * VN), wv[v], acc[r][v]);
            }
#pragma GCC unroll 8
        for (int r = 0; r < DWR; r++)
#pragma GCC unroll 8
            for (int v = 0; v < DWV; v++)
                V_STORE(orow[r] + c0 + v * VN, relu ? V_MAX(V_ZERO(), acc[r][v]) : acc[r][v]);
    }
    for (; c0 < channels; c0 += VN) {   /* the last channels, one (partial) vector at a time */
        int n = channels - c0 < VN ? (int)(channels - c0) : VN;
        for (int r = 0; r < DWR; r++) {
            V acc = bias ? V_LOAD_N(bias + c0, n) : V_ZERO();
            for (size_t sg = 0; sg < nseg; sg++)
                for (size_t i = 0; i < seg_taps; i++) {
                    const T *p = ar[r] + sg * seg_stride + i * channels + c0;
                    const T *wt = w + (sg * seg_taps + i) * channels + c0;
                    acc = V_FMA(V_LOAD_N(p, n), V_LOAD_N(wt, n), acc);
                }
            V_STORE_N(orow[r] + c0, relu ? V_MAX(V_ZERO(), acc) : acc, n);
        }
    }
}

/* A depthwise convolution of one NCHW channel (DWPLANENAME), the plane split by phase as
 * gemm.h describes:
 *   out[r*ow + j] = bias + sum_{a<kh, b<kw} w[a*kw + b] * P[r*sh + a*dh][j*sw + b*dw]
 * for r < oh, j < ow, P the zero-padded input channel (the plane's padding is zeroed by the
 * caller once; only the input's values are written here). Rows of at least two vectors are
 * computed straight into out; narrower ones block_rows at a time end to end into `wide`
 * (q values a row, the last q - ow of each dropped), so that the vectors fill, and copied
 * out. Each output sums its taps in (a, b) order from the bias, as every method does. */
#define DWP_CAT_(a, b) a##_##b
#define DWP_CAT(a, b) DWP_CAT_(a, b)
#define DWP_FILL DWP_CAT(DWPLANENAME, fill)
#define DWP_COPY DWP_CAT(DWPLANENAME, copy)

/* n values from src to dst, whole vectors then one by one: on Zen 3 that beat a masked load
 * and store for the last values (with DWP_FILL's division gone too, 3x3 576 ch at 14x14
 * 0.178 -> 0.122 ms) */
static inline __attribute__((always_inline)) void DWP_COPY(T *dst, const T *src, size_t n)
{
    size_t j = 0;
    for (; j + VN <= n; j += VN)
        V_STORE(dst + j, V_LOAD(src + j));
    for (; j < n; j++)
        dst[j] = src[j];
}

/* The input rows and columns the outputs read, into their phase planes. */
static void DWP_FILL(const dwplane_geom *pg, const T *restrict x, T *restrict plane)
{
    const size_t q = pg->q, sub = pg->sub_rows * q, sh = pg->sh, sw = pg->sw, n = pg->in_cols;
    /* padded row pt + ih is row prow of row phase `phase`: counted, not divided per row */
    size_t phase = pg->pt % sh, prow = pg->pt / sh;
    for (size_t ih = 0; ih < pg->in_rows; ih++) {
        T *restrict row = plane + phase * sw * sub + prow * q;   /* column phase 0 */
        if (++phase == sh) {
            phase = 0;
            prow++;
        }
        const T *restrict src = x + ih * pg->w;
        if (sw == 1) {
            DWP_COPY(row + pg->pl, src, n);
        } else if (sw == 2) {   /* even and odd columns at once (the compiler's shuffles) */
            T *restrict d0 = row + pg->pl % 2 * sub + pg->pl / 2;
            T *restrict d1 = row + (pg->pl + 1) % 2 * sub + (pg->pl + 1) / 2;
            for (size_t k = 0; k < n / 2; k++) {
                d0[k] = src[2 * k];
                d1[k] = src[2 * k + 1];
            }
            if (n % 2)
                d0[n / 2] = src[n - 1];
        } else {
            /* column pl + i0 is column cpos of column phase cph: counted as the rows are */
            for (size_t i0 = 0, cph = pg->pl % sw, cpos = pg->pl / sw; i0 < sw && i0 < n; i0++) {
                T *restrict dst = row + cph * sub + cpos;
                for (size_t k = 0; i0 + k * sw < n; k++)
                    dst[k] = src[i0 + k * sw];
                if (++cph == sw) {
                    cph = 0;
                    cpos++;
                }
            }
        }
    }
}

void DWPLANENAME(const dwplane_geom *pg, const T *x, T *plane, T *wide, const T *w, T bias,
                 T *out, int relu)
{
    const size_t q = pg->q, ow = pg->ow, taps = pg->kh * pg->kw, *off = pg->tap_offset;
    V w9[9];
    const int k3 = pg->kh == 3 && pg->kw == 3;
    if (k3)   /* the common case: the 9 weights stay in registers */
        for (int t = 0; t < 9; t++)
            w9[t] = V_BCAST(w + t);
    DWP_FILL(pg, x, plane);
    /* NU vectors of outputs, vector u from plane offset src + u*ss into dst + u*ds, n values
     * each: NU independent accumulator chains (one waits on the FMA latency). Loads may run
     * past the outputs' inputs, into the overrun gemm.h allows; stores do not. */
#define DWP_STEP(NU, src, ss, dst, ds, n)                                                 \
    do {                                                                                  \
        const T *in_ = plane + (src);                                                     \
        V acc[NU];                                                                        \
        _Pragma("GCC unroll 8")                                                           \
        for (int u = 0; u < NU; u++)                                                      \
            acc[u] = V_BCAST(&bias);                                                      \
        if (k3) {                                                                         \
            _Pragma("GCC unroll 9")                                                       \
            for (int t = 0; t < 9; t++)                                                   \
                _Pragma("GCC unroll 8")                                                   \
                for (int u = 0; u < NU; u++)                                              \
                    acc[u] = V_FMA(w9[t], V_LOAD(in_ + off[t] + u * (ss)), acc[u]);       \
        } else {                                                                          \
            for (size_t t = 0; t < taps; t++) {                                           \
                const V wv_ = V_BCAST(w + t);                                             \
                _Pragma("GCC unroll 8")                                                   \
                for (int u = 0; u < NU; u++)                                              \
                    acc[u] = V_FMA(wv_, V_LOAD(in_ + off[t] + u * (ss)), acc[u]);         \
            }                                                                             \
        }                                                                                 \
        _Pragma("GCC unroll 8")                                                           \
        for (int u = 0; u < NU; u++) {                                                    \
            const V v_ = relu ? V_MAX(V_ZERO(), acc[u]) : acc[u];                         \
            if ((n) == VN)                                                                \
                V_STORE((dst) + u * (ds), v_);                                            \
            else                                                                          \
                V_STORE_N((dst) + u * (ds), v_, (int)(n));                                \
        }                                                                                 \
    } while (0)
    if (ow >= 2 * VN) {
        /* wide rows: straight into out, DWR rows at a time, a row's last vector masked */
        size_t r = 0;
        for (; r + DWR <= pg->oh; r += DWR)
            for (size_t j = 0; j < ow; j += VN)
                DWP_STEP(DWR, r * q + j, q, out + r * ow + j, ow, ow - j < VN ? ow - j : VN);
        for (; r < pg->oh; r++)
            for (size_t j = 0; j < ow; j += VN)
                DWP_STEP(1, r * q + j, q, out + r * ow + j, ow, ow - j < VN ? ow - j : VN);
        return;
    }
    /* narrow rows: block_rows output rows end to end into `wide` (q values a row), so that
     * the vectors fill, then copied out */
    for (size_t r0 = 0; r0 < pg->oh; r0 += pg->block_rows) {
        const size_t r1 = r0 + pg->block_rows < pg->oh ? r0 + pg->block_rows : pg->oh;
        const size_t m = (r1 - r0) * q;
        size_t i = 0;   /* the last vector runs past m, into wide's overrun */
        for (; i + DWR * VN <= m; i += DWR * VN)
            DWP_STEP(DWR, r0 * q + i, VN, wide + i, VN, VN);
        for (; i < m; i += VN)
            DWP_STEP(1, r0 * q + i, VN, wide + i, VN, VN);
        /* rows in order, each in whole vectors where they stay inside the channel's output:
         * what a row's last vector writes past its end, the rows after it overwrite */
        const size_t whole = (ow + VN - 1) / VN * VN, end = pg->oh * ow;
        for (size_t r = r0; r < r1; r++) {
            T *o = out + r * ow;
            const T *src = wide + (r - r0) * q;
            if (r * ow + whole <= end)
                for (size_t j = 0; j < whole; j += VN)
                    V_STORE(o + j, V_LOAD(src + j));
            else
                DWP_COPY(o, src, ow);
        }
    }
#undef DWP_STEP
}
#undef DWP_COPY
#undef DWP_FILL
#undef DWP_CAT
#undef DWP_CAT_

/* One output row of a depthwise convolution, rows and output NHWC-ordered (DWROWNAME):
 *   out[j*channels + c] = bias[c] + sum_{a<kh, b<kw} w[(a*kw + b)*channels + c]
 *                                       * rows[a][(j*sw + b*dw)*channels + c]
 * for j < ow, c < channels: rows[a] is the padded input row that kernel row a reads (zeros
 * in the padding), w the (kh, kw, channels) weights, bias NULL or [channels].
 * A tile is R consecutive pixels by NV vectors of channels. With 3 or 5 taps a row, stride
 * 1 or 2 and no dilation (compile-time KWC, SWC) the tile loads each input vector once per
 * kernel row and multiplies it by every tap that reads it: (R-1)*SW + KW loads for R*KW FMAs,
 * instead of one load each. Either way each output sums its taps in (a, b) order, as every
 * other method does. A last partial tile of pixels is shifted left onto computed ones (same
 * results rewritten), so that every tile is whole; rows narrower than R get tiles of R/2. */
#define DWROW_LOAD(p) (masked ? V_LOAD_N(p, n) : V_LOAD(p))
#define DWROW_KW_MAX 5
#define DWROW_CAT_(a, b) a##_##b
#define DWROW_CAT(a, b) DWROW_CAT_(a, b)
#define DWROW_TILE DWROW_CAT(DWROWNAME, tile)
#define DWROW_PIXELS DWROW_CAT(DWROWNAME, pixels)
static inline __attribute__((always_inline)) void DWROW_TILE(
    const int R, const int NV, const int KWC, const int SWC, const int masked, int n,
    size_t kh, size_t kw, size_t sw, size_t dw, const T *const *rows, size_t x0, size_t C,
    const T *w, const T *bias, T *o, int relu)
{
    V acc[DWROW_R > 7 ? DWROW_R : 7][DWROW_NV];   /* R: DWROW_R, 7 or fewer (DWROW_PIXELS) */
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = bias ? DWROW_LOAD(bias + v * VN) : V_ZERO();
    for (size_t a = 0; a < kh; a++) {
        const T *in = rows[a] + x0;
        if (KWC) {
            const T *wa = w + a * KWC * C;
            V wv[DWROW_KW_MAX][DWROW_NV];
#pragma GCC unroll 8
            for (int b = 0; b < KWC; b++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    wv[b][v] = DWROW_LOAD(wa + b * C + v * VN);
#pragma GCC unroll 32
            for (int u = 0; u < (R - 1) * SWC + KWC; u++)   /* input column u of the tile */
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) {
                    const V xv = DWROW_LOAD(in + u * C + v * VN);
#pragma GCC unroll 16
                    for (int i = 0; i < R; i++) {   /* pixel i reads it as tap u - i*SW */
                        const int b = u - i * SWC;
                        if (b >= 0 && b < KWC)
                            acc[i][v] = V_FMA(xv, wv[b][v], acc[i][v]);
                    }
                }
        } else {
            for (size_t b = 0; b < kw; b++) {
                const T *wt = w + (a * kw + b) * C;
                const T *tap = in + b * dw * C;
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) {
                    const V wv = DWROW_LOAD(wt + v * VN);
#pragma GCC unroll 16
                    for (int i = 0; i < R; i++)
                        acc[i][v] = V_FMA(DWROW_LOAD(tap + i * sw * C + v * VN), wv, acc[i][v]);
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            V r = relu ? V_MAX(V_ZERO(), acc[i][v]) : acc[i][v];
            if (masked)
                V_STORE_N(o + i * C + v * VN, r, n);
            else
                V_STORE(o + i * C + v * VN, r);
        }
}

/* Every pixel of the row for channels [c0, c0 + NV*VN) (the last vector n lanes if masked). */
static inline __attribute__((always_inline)) void DWROW_PIXELS(
    const int KWC, const int SWC, const int NV, const int masked, int n, size_t c0, size_t ow,
    size_t C, size_t kh, size_t kw, size_t sw, size_t dw, const T *const *rows, const T *w,
    const T *bias, T *out, int relu)
{
    const T *bc = bias ? bias + c0 : NULL;
#define DWROW_TILES(R)                                                                        \
    for (size_t j = 0;; j += (R)) {                                                           \
        if (j + (R) > ow)                                                                     \
            j = ow - (R);                                                                     \
        DWROW_TILE((R), NV, KWC, SWC, masked, n, kh, kw, sw, dw, rows, j * sw * C + c0, C,    \
                   w + c0, bc, out + j * C + c0, relu);                                       \
        if (j + (R) == ow)                                                                    \
            break;                                                                            \
    }
    /* Tiles of 7 on rows of 7 to 32 pixels where they recompute fewer pixels than DWROW_R's
     * (SIMD builds; registers: 7 x NV accumulators, KW x NV weights): the 7-, 14- and 28-wide
     * maps of mobile networks recomputed 5 of 12, 4 of 18 and 2 of 30 pixels with tiles of 6,
     * and 1 of 8, 2 of 16 and 4 of 32 with tiles of 8 (of 4 below 8). Measured (Zen 3, AVX2,
     * NHWC ring, N=8, 1 thread): 5x5 1152 ch at 7x7 1.46x, 3x3 960 at 7x7 1.56x, 3x3 s2 576
     * at 14x14 1.32x, 3x3 576 at 14x14 1.19x, 3x3 144 at 28x28 1.08x; on 56 and 112 pixels,
     * where the 6-pixel tiles waste as little, 0.92-0.98x on 3x3 s1, hence the bound. */
    if (DWROW_R >= 6 && ow >= 7 && ow <= 32 &&
        (ow + 6) / 7 * 7 < (ow + DWROW_R - 1) / DWROW_R * DWROW_R) {
        DWROW_TILES(7)
    } else if (ow >= DWROW_R) {
        DWROW_TILES(DWROW_R)
    } else if (ow >= DWROW_R / 2 && DWROW_R / 2 > 1) {   /* small maps (7 wide) */
        DWROW_TILES(DWROW_R / 2)
    } else {
        DWROW_TILES(1)
    }
#undef DWROW_TILES
}

/* The channel blocks of a row: tiles of DWROW_NV vectors, then of one, then the masked rest. */
#define DWROW_CHANNELS(KWC, SWC)                                                              \
    do {                                                                                      \
        size_t c0 = 0;                                                                        \
        for (; c0 + DWROW_NV * VN <= channels; c0 += DWROW_NV * VN)                           \
            DWROW_PIXELS(KWC, SWC, DWROW_NV, 0, VN, c0, ow, channels, kh, kw, sw, dw, rows, w,  \
                         bias, out, relu);                                                    \
        for (; c0 + VN <= channels; c0 += VN)                                                 \
            DWROW_PIXELS(KWC, SWC, 1, 0, VN, c0, ow, channels, kh, kw, sw, dw, rows, w, bias,  \
                         out, relu);                                                          \
        if (c0 < channels)                                                                    \
            DWROW_PIXELS(KWC, SWC, 1, 1, (int)(channels - c0), c0, ow, channels, kh, kw, sw,  \
                         dw, rows, w, bias, out, relu);                                       \
    } while (0)

void DWROWNAME(size_t ow, size_t channels, size_t kh, size_t kw, size_t sw, size_t dw,
               const T *const *rows, const T *w, const T *bias, T *out, int relu)
{
    if (ow == 0)   /* (the tiles would start at ow - R) */
        return;
    if (dw == 1 && kw == 3 && sw == 1)
        DWROW_CHANNELS(3, 1);
    else if (dw == 1 && kw == 3 && sw == 2)
        DWROW_CHANNELS(3, 2);
    else if (dw == 1 && kw == 5 && sw == 1)
        DWROW_CHANNELS(5, 1);
    else if (dw == 1 && kw == 5 && sw == 2)
        DWROW_CHANNELS(5, 2);
    else
        DWROW_CHANNELS(0, 0);
}
#undef DWROW_CHANNELS
#undef DWROW_PIXELS
#undef DWROW_TILE
#undef DWROW_CAT
#undef DWROW_CAT_
#undef DWROW_KW_MAX
#undef DWROW_LOAD

#undef DWNAME
#undef DWPLANENAME
#undef DWROWNAME
#undef DWROW_R
#undef DWROW_NV
#undef DWV
#undef DWR
#undef T
#undef V
#undef VN
#undef MR
#undef NRV
#undef KNAME
#undef V_ZERO
#undef V_LOAD
#undef V_LOAD_N
#undef V_STORE
#undef V_STORE_N
#undef V_STREAM
#undef V_STREAM16
#undef V_BCAST
#undef V_FMA
#undef V_MAX
