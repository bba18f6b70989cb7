/* The weight gradient: dW = sum over the batch's output pixels p of im2row(p)^T * dY(p), a
 * GEMM whose K dimension is the pixels. The im2row matrix is lowered one block of GW_PB
 * pixels at a time, so it never exists whole. Included by conv.c per dtype (T and SFX
 * defined; see driver.h).
 *
 * Every element of dW is summed by one task, over the pixels in batch order (blocks of GW_PB,
 * each summed in order by the microkernel): the result does not depend on the thread count.
 */

/* NHWC, one group, K panels [pa, pb): dW^T (OCg x K, K in (kh, kw, c) order) = dY^T * X, with
 * A = the group's dY block transposed (OCg rows of pixels) and B = NR-wide panels of the
 * im2row block, lowered straight from the input. Result into c (OCg rows of ldc), then
 * transposed into the HWIO gradient. */
static void FN(gw_nhwc_task)(const i2r_layout *L, const i2r_geom *g, const T *x, const T *dy,
                             int64_t group, int64_t pa, int64_t pb, T *gw, T *abuf, T *bbuf,
                             T *c)
{
    const KFN(gemm) ukernel = L->FN(k).gemm;
    const int64_t NR = L->nr, MR = L->mr, OCG = L->ocg, K = L->k;
    const int64_t P = g->n * g->oh * g->ow, k0 = pa * NR, kn = min64(pb * NR, K) - k0;
    const int64_t ldc = (pb - pa) * NR;
    const FN(lowering) src = {x + group * L->cg, 0, g->h * g->w * g->c, g->w * g->c, g->c,
                              NULL};
    for (int64_t p0 = 0; p0 < P; p0 += GW_PB) {
        const int64_t pc = min64(GW_PB, P - p0);
        const int flags = p0 ? GEMM_ACCUMULATE : 0;
        FN(transpose)(L, dy + p0 * g->oc + group * OCG, pc, OCG, g->oc, abuf, pc, 1);
        for (int64_t j = pa; j < pb; j++) {
            const int64_t kj = j * NR, kc = min64(NR, K - kj);
            FN(lower_block)(L, g, &src, p0, pc, kj, kc, NR, bbuf);
            for (int64_t i = 0; kc < NR && i < pc; i++)
                FN(zero_channels)(bbuf + i * NR + kc, NR - kc);
            for (int64_t i = 0; i < OCG; i += MR)
                ukernel((size_t)min64(MR, OCG - i), (size_t)kc, (size_t)pc, abuf + i * pc,
                        (size_t)pc, bbuf, c + i * ldc + (kj - k0), (size_t)ldc, NULL, flags);
        }
    }
    /* HWIO: gw[k*OC + group*OCg + oc] = c[oc*ldc + k - k0] */
    FN(transpose)(L, c, OCG, kn, ldc, gw + k0 * g->oc + group * OCG, g->oc, 1);
}

/* NCHW, one group, its channels [c0, c1): dW (rows k = (c, kh, kw), OCg columns) = Xcol * dY^T,
 * with A = the im2col rows of those channels for a block of one image's pixels (lower_panels,
 * one panel GW_PB wide) and B = NR-wide panels of dY^T (the planes' blocks transposed). Result
 * into c, then transposed into the OIHW gradient. */
static void FN(gw_nchw_task)(const i2r_layout *L, const i2r_geom *g, const T *x, const T *dy,
                             int64_t group, int64_t c0, int64_t c1, T *gw, T *abuf, T *bbuf,
                             T *c)
{
    const KFN(gemm) ukernel = L->FN(k).gemm;
    const int64_t NR = L->nr, MR = L->mr, OCG = L->ocg, K = L->k, TAPS = g->kh * g->kw;
    const int64_t plane = g->h * g->w, opix = g->oh * g->ow, np = cdiv(OCG, NR);
    const int64_t rows = (c1 - c0) * TAPS;
    memset(bbuf, 0, (size_t)(np * GW_PB * NR) * sizeof(T));   /* the last panel's tail */
    for (int64_t n = 0; n < g->n; n++) {
        const T *x_img = x + (n * g->c + group * L->cg + c0) * plane;
        const T *dy_img = dy + (n * g->oc + group * OCG) * opix;
        for (int64_t q0 = 0; q0 < opix; q0 += GW_PB) {
            const int64_t pc = min64(GW_PB, opix - q0);
            const int flags = n || q0 ? GEMM_ACCUMULATE : 0;
            FN(lower_panels)(g, x_img, c1 - c0, pc, q0, pc, 0, 1, abuf);
            for (int64_t j = 0; j < np; j++)
                FN(transpose)(L, dy_img + j * NR * opix + q0, min64(NR, OCG - j * NR), pc,
                              opix, bbuf + j * GW_PB * NR, NR, 1);
            for (int64_t j = 0; j < np; j++)
                for (int64_t i = 0; i < rows; i += MR)
                    ukernel((size_t)min64(MR, rows - i), (size_t)min64(NR, OCG - j * NR),
                            (size_t)pc, abuf + i * pc, (size_t)pc, bbuf + j * GW_PB * NR,
                            c + i * OCG + j * NR, (size_t)OCG, NULL, flags);
        }
    }
    /* OIHW: gw[(group*OCg + oc)*K + k] = c[(k - c0*TAPS)*OCg + oc] */
    FN(transpose)(L, c, rows, OCG, OCG, gw + group * OCG * K + c0 * TAPS, K, 1);
}

/* One thread's share: its scratch, then tasks taken dynamically (the loop is the enclosing
 * parallel region's, or the whole of it on one thread). Sets *failed without scratch. */
static void FN(gw_thread_work)(const i2r_layout *L, const i2r_geom *g, const gw_schedule *s,
                               const T *x, const T *dy, T *gw, int *failed)
{
    int64_t capacity;
    T *scratch = (T *)buffer_alloc(s->thread_bytes, &capacity);
    if (!scratch)
        *failed = 1;
    T *abuf = scratch, *bbuf = scratch + s->abytes / (int64_t)sizeof(T);
    T *c = bbuf + s->bbytes / (int64_t)sizeof(T);
#ifdef I2R_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t task = 0; task < s->ntasks; task++) {
        if (*failed)
            continue;
        const int64_t group = task / s->parts, b = task % s->parts;
        const int64_t lo = b * s->units / s->parts, hi = (b + 1) * s->units / s->parts;
        if (lo == hi)
            continue;
        if (g->nhwc)
            FN(gw_nhwc_task)(L, g, x, dy, group, lo, hi, gw, abuf, bbuf, c);
        else
            FN(gw_nchw_task)(L, g, x, dy, group, lo, hi, gw, abuf, bbuf, c);
    }
    buffer_free(scratch, capacity);
}

static i2r_status FN(grad_weight)(const i2r_layout *L, const i2r_geom *g, const gw_schedule *s,
                                  const T *x, const T *dy, T *gw)
{
    int failed = 0;
    if (s->threads > 1) {   /* no OpenMP region for one thread (see FN(conv)) */
#ifdef I2R_HAVE_OPENMP
#pragma omp parallel num_threads((int)s->threads) reduction(| : failed)
#endif
        FN(gw_thread_work)(L, g, s, x, dy, gw, &failed);
    } else {
        FN(gw_thread_work)(L, g, s, x, dy, gw, &failed);
    }
    return failed ? I2R_ENOMEM : I2R_OK;
}
