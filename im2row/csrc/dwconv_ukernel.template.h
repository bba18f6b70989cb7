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
 *   out[r*ow + j] = bias + sum_{a<kh, b<kw} w[a*kw + b] * plane[(r*sh + a*dh)*pc + j*sw + b*dw]
 * for r < oh, j < ow; plane is the zero-padded input channel, pc values a row. With sw = 1 a
 * vector of VN outputs accumulates in a register over all taps (contiguous loads). */
/* n outputs of acc (ReLU applied if asked) to o */
#define DW_STORE(o, acc, n)                                          \
    do {                                                             \
        V v_ = relu ? V_MAX(acc, V_ZERO()) : (acc);                  \
        if ((n) == VN)                                               \
            V_STORE(o, v_);                                          \
        else                                                         \
            V_STORE_N(o, v_, n);                                     \
    } while (0)

void DWPLANENAME(size_t oh, size_t ow, size_t kh, size_t kw, size_t sh, size_t sw, size_t dh,
                 size_t dw, const T *plane, size_t pc, const T *w, T bias, T *out, int relu)
{
    for (size_t r = 0; r < oh; r++) {
        const T *in = plane + r * sh * pc;
        T *o = out + r * ow;
        if (sw != 1) {
            for (size_t j = 0; j < ow; j++) {
                T acc = bias;
                for (size_t a = 0; a < kh; a++)
                    for (size_t b = 0; b < kw; b++)
                        acc += w[a * kw + b] * in[a * dh * pc + j * sw + b * dw];
                o[j] = relu && acc < (T)0 ? (T)0 : acc;
            }
            continue;
        }
        if (kh == 3 && kw == 3) {   /* the common case: the 9 weights stay in registers */
            V w9[9];
            for (int t = 0; t < 9; t++)
                w9[t] = V_BCAST(w + t);
            for (size_t j = 0; j < ow; j += VN) {
                int n = ow - j < VN ? (int)(ow - j) : VN;
                V acc = V_BCAST(&bias);
#pragma GCC unroll 3
                for (int a = 0; a < 3; a++)
#pragma GCC unroll 3
                    for (int b = 0; b < 3; b++) {
                        const T *p = in + a * dh * pc + j + b * dw;
                        acc = V_FMA(w9[a * 3 + b], n == VN ? V_LOAD(p) : V_LOAD_N(p, n), acc);
                    }
                DW_STORE(o + j, acc, n);
            }
            continue;
        }
        for (size_t j = 0; j < ow; j += VN) {
            int n = ow - j < VN ? (int)(ow - j) : VN;
            V acc = V_BCAST(&bias);
            for (size_t a = 0; a < kh; a++)
                for (size_t b = 0; b < kw; b++) {
                    const T *p = in + a * dh * pc + j + b * dw;
                    acc = V_FMA(V_BCAST(w + a * kw + b), n == VN ? V_LOAD(p) : V_LOAD_N(p, n),
                                acc);
                }
            DW_STORE(o + j, acc, n);
        }
    }
}
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
#undef V_BCAST
#undef V_FMA
#undef V_MAX
