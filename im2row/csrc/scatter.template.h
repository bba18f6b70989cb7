/* The transposed convolution in scatter form, NHWC (i2r_transpose_scatter): for transposed
 * convolutions with few output channels, where the phase split's forward GEMMs would fill few
 * columns of their NR-wide panels. Included by conv.c per dtype (T and SFX defined).
 *
 * g is the forward convolution y = conv(x, w) whose input gradient dx is computed (= the
 * transposed convolution of dy with w): per block of SC_PB pixels of dy, cols (pixels x K,
 * K in (kh, kw, c) order) = dy rows (read in place) x w packed as K panels, then each pixel's
 * KH*KW channel runs are added into the dx pixels its taps read. Depthwise layers skip the
 * GEMM: dy times the tap's channel weights, added directly. An image's dx is written by
 * one task, in pixel order: the result does not depend on the thread count. */

/* w (HWIO, K x OC) as [G][K panels][OCg][NR]: B panels of the GEMM whose K dimension is OC. */
static void FN(scatter_pack)(const i2r_layout *L, const i2r_geom *g, const T *w, T *wpack)
{
    const int64_t NR = L->nr, K = L->k, OCG = L->ocg, np = cdiv(K, NR);
    for (int64_t grp = 0; grp < L->groups; grp++)
        for (int64_t j = 0; j < np; j++)
            for (int64_t oc = 0; oc < OCG; oc++) {
                T *dst = wpack + ((grp * np + j) * OCG + oc) * NR;
                for (int64_t jj = 0; jj < NR; jj++) {
                    const int64_t k = j * NR + jj;
                    dst[jj] = k < K ? w[k * g->oc + grp * OCG + oc] : (T)0;
                }
            }
}

static void FN(scatter_image)(const i2r_layout *L, const i2r_geom *g, const T *dy,
                              const T *wpack, int64_t n, T *dx, T *cbuf)
{
    const KFN(gemm) ukernel = L->FN(k).gemm;
    const int64_t NR = L->nr, K = L->k, CG = L->cg, OCG = L->ocg;
    const int64_t opix = g->oh * g->ow, np = cdiv(K, NR), ldc = np * NR;
    T *dx_img = dx + n * g->h * g->w * g->c;
    memset(dx_img, 0, (size_t)(g->h * g->w * g->c) * sizeof(T));
    for (int64_t grp = 0; grp < L->groups; grp++)
        for (int64_t p0 = 0; p0 < opix; p0 += SC_PB) {
            const int64_t pc = min64(SC_PB, opix - p0);
            const T *a = dy + (n * opix + p0) * g->oc + grp * OCG;
            for (int64_t j = 0; j < np; j++)
                ukernel((size_t)pc, (size_t)min64(NR, K - j * NR), (size_t)OCG, a,
                        (size_t)g->oc, wpack + (grp * np + j) * OCG * NR, cbuf + j * NR,
                        (size_t)ldc, NULL, 0);
            for (int64_t i = 0; i < pc; i++) {
                const int64_t p = p0 + i, oh = p / g->ow, ow = p % g->ow;
                /* taps kw in [lo, hi) read inside the input row */
                const int64_t iw0 = ow * g->sw - g->pl;
                const int64_t lo = iw0 >= 0 ? 0 : min64(g->kw, cdiv(-iw0, g->dw));
                const int64_t hi = max64(lo, min64(g->kw, cdiv(g->w - iw0, g->dw)));
                for (int64_t kh = 0; kh < g->kh; kh++) {
                    const int64_t ih = oh * g->sh + kh * g->dh - g->pt;
                    if (ih < 0 || ih >= g->h || lo == hi)
                        continue;
                    T *d = dx_img + (ih * g->w + iw0 + lo * g->dw) * g->c + grp * CG;
                    const T *s = cbuf + i * ldc + (kh * g->kw + lo) * CG;
                    if (g->dw == 1 && g->groups == 1) {   /* one run of (hi - lo) * C */
                        for (int64_t v = 0; v < (hi - lo) * CG; v++)
                            d[v] += s[v];
                        continue;
                    }
                    for (int64_t kw = lo; kw < hi; kw++, d += g->dw * g->c, s += CG)
                        for (int64_t c = 0; c < CG; c++)
                            d[c] += s[c];
                }
            }
        }
}

/* Depthwise (one channel in and out per group): each dy pixel times each tap's channel
 * weights, added into the input pixel the tap reads; vectorised across the channels. */
static void FN(scatter_depthwise_image)(const i2r_geom *g, const T *dy, const T *w, int64_t n,
                                        T *dx)
{
    const int64_t C = g->c;
    T *dx_img = dx + n * g->h * g->w * C;
    memset(dx_img, 0, (size_t)(g->h * g->w * C) * sizeof(T));
    for (int64_t oh = 0; oh < g->oh; oh++)
        for (int64_t ow = 0; ow < g->ow; ow++) {
            const T *d = dy + ((n * g->oh + oh) * g->ow + ow) * C;
            for (int64_t kh = 0; kh < g->kh; kh++) {
                const int64_t ih = oh * g->sh + kh * g->dh - g->pt;
                if (ih < 0 || ih >= g->h)
                    continue;
                for (int64_t kw = 0; kw < g->kw; kw++) {
                    const int64_t iw = ow * g->sw + kw * g->dw - g->pl;
                    if (iw < 0 || iw >= g->w)
                        continue;
                    T *o = dx_img + (ih * g->w + iw) * C;
                    const T *wt = w + (kh * g->kw + kw) * C;   /* HWIO (KH, KW, 1, C) */
                    for (int64_t c = 0; c < C; c++)
                        o[c] += d[c] * wt[c];
                }
            }
        }
}

static void FN(scatter_thread_work)(const i2r_layout *L, const i2r_geom *g, const T *dy,
                                    const T *w, const T *wpack, T *dx, int *failed)
{
    int64_t capacity = 0;
    T *cbuf = L->depthwise ? NULL : (T *)buffer_alloc(MUL3(SC_PB, cdiv(L->k, L->nr) * L->nr,
                                                           (int64_t)sizeof(T)), &capacity);
    if (!L->depthwise && !cbuf)
        *failed = 1;
#ifdef I2R_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t n = 0; n < g->n; n++) {
        if (*failed)
            continue;
        if (L->depthwise)
            FN(scatter_depthwise_image)(g, dy, w, n, dx);
        else
            FN(scatter_image)(L, g, dy, wpack, n, dx, cbuf);
    }
    buffer_free(cbuf, capacity);
}

static i2r_status FN(transpose_scatter)(const i2r_layout *L, const i2r_geom *g, int nthreads,
                                        const T *dy, const T *w, T *dx)
{
    const int64_t np = cdiv(L->k, L->nr);
    T *wpack = NULL;
    if (!L->depthwise) {
        wpack = malloc((size_t)(L->groups * np * L->ocg * L->nr) * sizeof(T));
        if (!wpack)
            return I2R_ENOMEM;
        FN(scatter_pack)(L, g, w, wpack);
    }
    int failed = 0;
    const int64_t threads = max64(1, min64(nthreads, g->n));
    ON_THREADS(threads, reduction(| : failed),
               FN(scatter_thread_work)(L, g, dy, w, wpack, dx, &failed));
    free(wpack);
    return failed ? I2R_ENOMEM : I2R_OK;
}
