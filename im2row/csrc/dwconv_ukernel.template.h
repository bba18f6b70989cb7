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
                V_STORE(orow[r] + c0 + v * VN, relu ? V_MAX(acc[r][v], V_ZERO()) : acc[r][v]);
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
            V_STORE_N(orow[r] + c0, relu ? V_MAX(acc, V_ZERO()) : acc, n);
        }
    }
}

/* A depthwise convolution of one NCHW channel plane (DWPLANENAME):
 *   out[r*ow + j] = bias + sum_{a<kh, b<kw} w[a*kw + b] * P[r*sh + a*dh][j*sw + b*dw]
 * for r < oh, j < ow, where P is the zero-padded input channel. Each plane row of pc values
 * holds P's row split by column phase: padded column col at (col % sw)*phase + col / sw, so
 * that the columns j*sw + b*dw of consecutive j are contiguous whatever the stride, and a
 * vector of VN outputs accumulates in a register over all taps from contiguous loads. */
/* n outputs of acc (ReLU applied if asked) to o */
#define DW_STORE(o, acc, n)                                          \
    do {                                                             \
        V v_ = relu ? V_MAX(acc, V_ZERO()) : (acc);                  \
        if ((n) == VN)                                               \
            V_STORE(o, v_);                                          \
        else                                                         \
            V_STORE_N(o, v_, n);                                     \
    } while (0)

/* the offset in a plane row of tap column b*dw of output column 0 (see above), walked
 * without a division per tap */
#define DW_TAP_COLUMNS(b, off, body)                                          \
    do {                                                                      \
        size_t ph_ = 0, idx_ = 0;                                             \
        for (size_t b = 0; b < kw; b++) {                                     \
            const size_t off = ph_ * phase + idx_;                            \
            body;                                                             \
            ph_ += dw_rem;                                                    \
            idx_ += dw_quot;                                                  \
            if (ph_ >= sw) { ph_ -= sw; idx_++; }                             \
        }                                                                     \
    } while (0)

void DWPLANENAME(size_t oh, size_t ow, size_t kh, size_t kw, size_t sh, size_t sw, size_t dh,
                 size_t dw, const T *plane, size_t pc, size_t phase, const T *w, T bias, T *out,
                 int relu)
{
    const size_t dw_quot = dw / sw, dw_rem = dw % sw;   /* tap steps in the phase layout */
    size_t off9[9];
    V w9[9];
    const int k3 = kh == 3 && kw == 3;
    if (k3) {   /* the common case: the 9 weights and their offsets stay in registers */
        for (size_t a = 0; a < 3; a++)
            DW_TAP_COLUMNS(b, off, off9[a * 3 + b] = a * dh * pc + off);
        for (int t = 0; t < 9; t++)
            w9[t] = V_BCAST(w + t);
    }
    /* DWR output rows at once: DWR independent accumulator chains (one chain waits on the
     * FMA latency), each output's taps still summed in order; rows past oh alias the last */
    for (size_t r = 0; r < oh; r += DWR) {
        const T *in[DWR];
        T *o[DWR];
#pragma GCC unroll 8
        for (int i = 0; i < DWR; i++) {
            size_t rr = r + (size_t)i < oh ? r + (size_t)i : oh - 1;
            in[i] = plane + rr * sh * pc;
            o[i] = out + rr * ow;
        }
        for (size_t j = 0; j < ow; j += VN) {
            int n = ow - j < VN ? (int)(ow - j) : VN;
            V acc[DWR];
#pragma GCC unroll 8
            for (int i = 0; i < DWR; i++)
                acc[i] = V_BCAST(&bias);
#define DW_TAP(wv, off)                                                       \
            do {                                                              \
                const V wv_ = (wv);                                           \
                _Pragma("GCC unroll 8")                                       \
                for (int i = 0; i < DWR; i++) {                               \
                    const T *p = in[i] + (off) + j;                           \
                    acc[i] = V_FMA(wv_, n == VN ? V_LOAD(p) : V_LOAD_N(p, n), acc[i]); \
                }                                                             \
            } while (0)
            if (k3) {
#pragma GCC unroll 9
                for (int t = 0; t < 9; t++)
                    DW_TAP(w9[t], off9[t]);
            } else {
                for (size_t a = 0; a < kh; a++)
                    DW_TAP_COLUMNS(b, off, DW_TAP(V_BCAST(w + a * kw + b), a * dh * pc + off));
            }
#undef DW_TAP
            for (int i = DWR - 1; i >= 0; i--)   /* aliased rows: the real one stored last */
                DW_STORE(o[i] + j, acc[i], n);
        }
    }
}
#undef DW_TAP_COLUMNS
#undef DW_STORE

#undef DWNAME
#undef DWPLANENAME
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
