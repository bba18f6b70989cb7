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

#undef DWNAME
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
