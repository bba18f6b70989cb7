/* One depthwise-convolution microkernel (contract in gemm.h), instantiated after
 * gemm_ukernel.template.h with the same vector macros still defined, plus DWNAME and DWV
 * (vectors of channels kept in registers at once). It undefines all the macros at the end.
 *
 *   out[c] = bias[c] + sum_t a[tap(t) + c] * w[t*channels + c]     (c < channels)
 *
 * Taps come in nseg segments of seg_taps taps, channels contiguous in each tap:
 * tap(s*seg_taps + i) = s*seg_stride + i*channels (one strip row, or KH rows dh apart).
 * w is the packed (taps, channels) weight block of the rotation in use; bias may be NULL. */
void DWNAME(size_t channels, size_t nseg, size_t seg_taps, size_t seg_stride, const T *a,
            const T *w, const T *bias, T *out, int relu)
{
    size_t c0 = 0;
    for (; c0 + DWV * VN <= channels; c0 += DWV * VN) {
        V acc[DWV];
#pragma GCC unroll 8
        for (int v = 0; v < DWV; v++)
            acc[v] = bias ? V_LOAD(bias + c0 + v * VN) : V_ZERO();
        for (size_t sg = 0; sg < nseg; sg++)
            for (size_t i = 0; i < seg_taps; i++) {
                const T *r = a + sg * seg_stride + i * channels + c0;
                const T *wt = w + (sg * seg_taps + i) * channels + c0;
#pragma GCC unroll 8
                for (int v = 0; v < DWV; v++)
                    acc[v] = V_FMA(V_LOAD(r + v * VN), V_LOAD(wt + v * VN), acc[v]);
            }
#pragma GCC unroll 8
        for (int v = 0; v < DWV; v++)
            V_STORE(out + c0 + v * VN, relu ? V_MAX(acc[v], V_ZERO()) : acc[v]);
    }
    for (; c0 < channels; c0 += VN) {   /* the last channels, one (partial) vector at a time */
        int n = channels - c0 < VN ? (int)(channels - c0) : VN;
        V acc = bias ? V_LOAD_N(bias + c0, n) : V_ZERO();
        for (size_t sg = 0; sg < nseg; sg++)
            for (size_t i = 0; i < seg_taps; i++) {
                const T *r = a + sg * seg_stride + i * channels + c0;
                const T *wt = w + (sg * seg_taps + i) * channels + c0;
                acc = V_FMA(V_LOAD_N(r, n), V_LOAD_N(wt, n), acc);
            }
        V_STORE_N(out + c0, relu ? V_MAX(acc, V_ZERO()) : acc, n);
    }
}

/* A depthwise convolution of one NCHW channel plane (DWPLANENAME):
 *   out[r*ow + j] = bias + sum_{a<kh, b<kw} w[a*kw + b] * plane[(r*sh + a*dh)*pc + j*sw + b*dw]
 * for r < oh, j < ow; plane is the zero-padded input channel, pc values a row. With sw = 1 a
 * vector of VN outputs accumulates in a register over all taps (contiguous loads). */
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
        for (size_t j = 0; j < ow; j += VN) {
            int n = ow - j < VN ? (int)(ow - j) : VN;
            V acc = V_BCAST(&bias);
            for (size_t a = 0; a < kh; a++)
                for (size_t b = 0; b < kw; b++) {
                    const T *p = in + a * dh * pc + j + b * dw;
                    acc = V_FMA(V_BCAST(w + a * kw + b), n == VN ? V_LOAD(p) : V_LOAD_N(p, n),
                                acc);
                }
            if (relu)
                acc = V_MAX(acc, V_ZERO());
            if (n == VN)
                V_STORE(o + j, acc);
            else
                V_STORE_N(o + j, acc, n);
        }
    }
}

#undef DWNAME
#undef DWPLANENAME
#undef DWV
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
