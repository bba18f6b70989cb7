/* The weight gradient: dW = sum over the batch's output pixels p of im2row(p)^T * dY(p), a
 * GEMM whose K dimension is the pixels. The im2row matrix is lowered one block of GW_PB
 * pixels at a time, so it never exists whole. Included by conv.c per dtype (T and SFX
 * defined; see driver.h).
 *
 * Every element of dW is summed by one task, over the pixels in batch order (blocks of GW_PB,
 * each summed in order by the microkernel): the result does not depend on the thread count.
 */

/* B panels [pa, pb) of the im2row block of pixels [p0, p0 + pc) of one NHWC group: panel j
 * at bbuf + (j - pa)*GW_PB*NR holds, row i, the columns [j*NR, j*NR + NR) of im2row row
 * p0 + i. One pass per pixel over its taps (channel runs split at panel edges); columns past
 * K are never written (the caller zeroes them once). */
static void FN(gw_lower_panels)(const i2r_layout *L, const i2r_geom *g, const T *x,
                                int64_t p0, int64_t pc, int64_t pa, int64_t pb, T *bbuf)
{
    const int64_t NR = L->nr, CG = L->cg, opix = g->oh * g->ow;
    const int64_t k0 = pa * NR, k1 = min64(pb * NR, L->k);
    const int64_t tap0 = k0 / CG, c_first = k0 % CG;
    for (int64_t i = 0; i < pc; i++) {
        const int64_t p = p0 + i, n = p / opix, oh = p % opix / g->ow, ow = p % g->ow;
        const T *img = x + n * g->h * g->w * g->c;
        /* walk (tap, channel) and (panel, column) together, without divisions */
        int64_t kh = tap0 / g->kw, kw = tap0 % g->kw, c = c_first, j = 0, jo = 0;
        T *row = bbuf + i * NR;
        for (int64_t k = k0; k < k1;) {
            const int64_t run = min64(min64(CG - c, NR - jo), k1 - k);
            const int64_t h = oh * g->sh + kh * g->dh - g->pt;
            const int64_t col = ow * g->sw + kw * g->dw - g->pl;
            T *dst = row + j * GW_PB * NR + jo;
            if (h < 0 || h >= g->h || col < 0 || col >= g->w)
                FN(zero_channels)(dst, run);
            else
                FN(copy_channels)(dst, img + (h * g->w + col) * g->c + c, run);
            k += run;
            c += run;
            jo += run;
            if (c == CG) {
                c = 0;
                if (++kw == g->kw) {
                    kw = 0;
                    kh++;
                }
            }
            if (jo == NR) {
                jo = 0;
                j++;
            }
        }
    }
}

/* NHWC, one group, K panels [pa, pb): dW^T (OCg x K, K in (kh, kw, c) order) = dY^T * X, with
 * A = the group's dY block transposed (OCg rows of pixels) and B = NR-wide panels of the
 * im2row block, lowered straight from the input. Result into c (OCg rows of ldc), then
 * transposed into the HWIO gradient. */
static void FN(gw_nhwc_task)(const i2r_layout *L, const i2r_geom *g, const T *x, const T *dy,
                             int64_t group, int64_t pa, int64_t pb, T *gw, T *abuf, T *bbuf,
                             T *c)
{
    const KFN(gemm) ukernel = L->FN(k).gemm;
    const int64_t NR = L->nr, OCG = L->ocg, K = L->k;
    const int64_t P = g->n * g->oh * g->ow, k0 = pa * NR, kn = min64(pb * NR, K) - k0;
    const int64_t ldc = (pb - pa) * NR;
    memset(bbuf, 0, (size_t)((pb - pa) * GW_PB * NR) * sizeof(T));   /* columns past K */
    for (int64_t p0 = 0; p0 < P; p0 += GW_PB) {
        const int64_t pc = min64(GW_PB, P - p0);
        const int flags = p0 ? GEMM_ACCUMULATE : 0;
        FN(transpose)(L, dy + p0 * g->oc + group * OCG, pc, OCG, g->oc, abuf, pc, 1);
        FN(gw_lower_panels)(L, g, x + group * L->cg, p0, pc, pa, pb, bbuf);
        for (int64_t j = pa; j < pb; j++) {
            const int64_t kj = j * NR, kc = min64(NR, K - kj);
            ukernel((size_t)OCG, (size_t)kc, (size_t)pc, abuf, (size_t)pc,
                    bbuf + (j - pa) * GW_PB * NR, c + (kj - k0), (size_t)ldc, NULL, flags);
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
                             int64_t group, int64_t c0, int64_t c1, int64_t qa, int64_t qb,
                             T *gw, T *abuf, T *bbuf, T *c)
{
    const KFN(gemm) ukernel = L->FN(k).gemm;
    const int64_t NR = L->nr, OCG = L->ocg, K = L->k, TAPS = g->kh * g->kw;
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
            for (int64_t j = qa; j < qb; j++)
                FN(transpose)(L, dy_img + j * NR * opix + q0, min64(NR, OCG - j * NR), pc,
                              opix, bbuf + j * GW_PB * NR, NR, 1);
            for (int64_t j = qa; j < qb; j++)
                ukernel((size_t)rows, (size_t)min64(NR, OCG - j * NR), (size_t)pc, abuf,
                        (size_t)pc, bbuf + j * GW_PB * NR, c + j * NR, (size_t)OCG, NULL,
                        flags);
        }
    }
    /* OIHW: gw[(group*OCg + oc)*K + k] = c[(k - c0*TAPS)*OCg + oc], oc of panels [qa, qb) */
    FN(transpose)(L, c + qa * NR, rows, min64(qb * NR, OCG) - qa * NR, OCG,
                  gw + (group * OCG + qa * NR) * K + c0 * TAPS, K, 1);
}

/* Depthwise (one channel in and out per group), channels [c0, c1): each weight is a sum of
 * products of two channel planes, no GEMM. NHWC: per output row, partial sums for all taps
 * across the channels (contiguous: vectorised), added to the totals row by row. NCHW: per
 * channel and tap, partial sums per output column over the batch's rows, then summed. */
static void FN(gw_depthwise_task)(const i2r_geom *g, const T *x, const T *dy, int64_t c0,
                                  int64_t c1, T *gw, T *buf)
{
    const int64_t KH = g->kh, KW = g->kw, C = g->c, TAPS = KH * KW, CN = c1 - c0;
    if (g->nhwc) {
        T *total = buf, *row = buf + TAPS * CN;
        memset(total, 0, (size_t)(TAPS * CN) * sizeof(T));
        for (int64_t n = 0; n < g->n; n++)
            for (int64_t oh = 0; oh < g->oh; oh++) {
                memset(row, 0, (size_t)(TAPS * CN) * sizeof(T));
                for (int64_t ow = 0; ow < g->ow; ow++) {
                    const T *d = dy + ((n * g->oh + oh) * g->ow + ow) * C + c0;
                    for (int64_t t = 0; t < TAPS; t++) {
                        const int64_t ih = oh * g->sh + t / KW * g->dh - g->pt;
                        const int64_t iw = ow * g->sw + t % KW * g->dw - g->pl;
                        if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w)
                            continue;
                        const T *xv = x + ((n * g->h + ih) * g->w + iw) * C + c0;
                        T *r = row + t * CN;
                        for (int64_t c = 0; c < CN; c++)
                            r[c] += d[c] * xv[c];
                    }
                }
                for (int64_t i = 0; i < TAPS * CN; i++)
                    total[i] += row[i];
            }
        for (int64_t t = 0; t < TAPS; t++)   /* HWIO (KH, KW, 1, C) */
            memcpy(gw + t * C + c0, total + t * CN, (size_t)CN * sizeof(T));
        return;
    }
    const int64_t plane = g->h * g->w, opix = g->oh * g->ow;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t t = 0; t < TAPS; t++) {
            const int64_t kh = t / KW, iw0 = t % KW * g->dw - g->pl;
            /* output columns [lo, hi) read inside the input row */
            const int64_t lo = iw0 >= 0 ? 0 : min64(g->ow, cdiv(-iw0, g->sw));
            const int64_t hi = iw0 >= g->w ? lo
                               : max64(lo, min64(g->ow, cdiv(g->w - iw0, g->sw)));
            memset(buf, 0, (size_t)g->ow * sizeof(T));
            for (int64_t n = 0; n < g->n; n++)
                for (int64_t oh = 0; oh < g->oh; oh++) {
                    const int64_t ih = oh * g->sh + kh * g->dh - g->pt;
                    if (ih < 0 || ih >= g->h)
                        continue;
                    const T *d = dy + (n * C + c) * opix + oh * g->ow;
                    const T *xr = x + (n * C + c) * plane + ih * g->w + iw0;
                    if (g->sw == 1)
                        for (int64_t ow = lo; ow < hi; ow++)
                            buf[ow] += d[ow] * xr[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++)
                            buf[ow] += d[ow] * xr[ow * g->sw];
                }
            T sum = 0;
            for (int64_t ow = 0; ow < g->ow; ow++)
                sum += buf[ow];
            gw[c * TAPS + t] = sum;   /* OIHW (C, 1, KH, KW) */
        }
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
        const int64_t q = task % s->oparts, rest = task / s->oparts;
        const int64_t group = rest / s->parts, b = rest % s->parts;
        const int64_t lo = b * s->units / s->parts, hi = (b + 1) * s->units / s->parts;
        const int64_t qa = q * L->npanels / s->oparts, qb = (q + 1) * L->npanels / s->oparts;
        if (lo == hi || qa == qb)
            continue;
        if (L->depthwise)
            FN(gw_depthwise_task)(g, x, dy, lo, hi, gw, scratch);
        else if (g->nhwc)
            FN(gw_nhwc_task)(L, g, x, dy, group, lo, hi, gw, abuf, bbuf, c);
        else
            FN(gw_nchw_task)(L, g, x, dy, group, lo, hi, qa, qb, gw, abuf, bbuf, c);
    }
    buffer_free(scratch, capacity);
}

static i2r_status FN(grad_weight)(const i2r_layout *L, const i2r_geom *g, const gw_schedule *s,
                                  const T *x, const T *dy, T *gw)
{
    int failed = 0;
    ON_THREADS(s->threads, reduction(| : failed), FN(gw_thread_work)(L, g, s, x, dy, gw, &failed));
    return failed ? I2R_ENOMEM : I2R_OK;
}

/* NHWC with few channels per group: the NHWC lowering would copy a run of Cg values per tap
 * and pixel, so x and dy are transposed into NCHW copies (image by image) and the NCHW tasks
 * run on them; the OIHW result is then written as HWIO. Measured (N=8, 1 thread): ResNet-50
 * stem 55 -> 34 ms, 3->64 3x3 at 180x180 37 -> 30 ms. */
/* x and dy of every image transposed from NHWC into NCHW copies, images split among the
 * enclosing region's threads; by blocks of 64 pixels, so that a block's rows stay cached while
 * its columns are read. */
static void FN(nchw_copies)(const i2r_layout *L, const i2r_geom *g, const T *x, const T *dy,
                            T *xn, T *dyn)
{
    const int64_t plane = g->h * g->w, opix = g->oh * g->ow;
#ifdef I2R_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t n = 0; n < g->n; n++) {
        for (int64_t r = 0; r < plane; r += 64)
            FN(transpose)(L, x + (n * plane + r) * g->c, min64(64, plane - r), g->c, g->c,
                          xn + n * g->c * plane + r, plane, 1);
        for (int64_t r = 0; r < opix; r += 64)
            FN(transpose)(L, dy + (n * opix + r) * g->oc, min64(64, opix - r), g->oc, g->oc,
                          dyn + n * g->oc * opix + r, opix, 1);
    }
}

static i2r_status FN(grad_weight_via_nchw)(const i2r_layout *L, const i2r_geom *g,
                                           int nthreads, const T *x, const T *dy, T *gw)
{
    i2r_geom gn = *g;
    gn.nhwc = 0;
    gw_schedule s;
    make_gw_schedule(&s, L, &gn, nthreads);
    const int64_t plane = g->h * g->w, opix = g->oh * g->ow, K = L->k, TAPS = g->kh * g->kw;
    int64_t xcap, dycap, gwcap;   /* from the block cache: fresh pages fault (buffers.c) */
    T *xn = buffer_alloc(MUL4(g->n, g->c, plane, (int64_t)sizeof(T)), &xcap);
    T *dyn = buffer_alloc(MUL4(g->n, g->oc, opix, (int64_t)sizeof(T)), &dycap);
    T *gwn = buffer_alloc(MUL3(g->oc, K, (int64_t)sizeof(T)), &gwcap);
    i2r_status st = I2R_ENOMEM;
    if (xn && dyn && gwn) {
        ON_THREADS(s.threads, , FN(nchw_copies)(L, g, x, dy, xn, dyn));
        st = FN(grad_weight)(L, &gn, &s, xn, dyn, gwn);
        for (int64_t oc = 0; st == I2R_OK && oc < g->oc; oc++)   /* OIHW -> HWIO */
            for (int64_t c = 0; c < L->cg; c++)
                for (int64_t t = 0; t < TAPS; t++)
                    gw[(t * L->cg + c) * g->oc + oc] = gwn[oc * K + c * TAPS + t];
    }
    buffer_free(xn, xcap);
    buffer_free(dyn, dycap);
    buffer_free(gwn, gwcap);
    return st;
}
