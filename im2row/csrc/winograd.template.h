/* The Winograd executor (i2r_winograd_conv; the method, its transforms and split: winograd.c).
 * Included by conv.c per dtype (T and SFX defined; see driver.h).
 *
 * A task takes a block of tiles of one group and a range of output-channel panels: it
 * input-transforms the block into V ([tile][p][Cg]: each tile's transform is written in one
 * piece), runs one GEMM per position p into M ([tile][p][ldm]; rows vld and mld apart)
 * on the forward's microkernels, and output-transforms M
 * straight into y, bias and ReLU applied there. Out-of-image input pixels read a zero pixel;
 * outputs of edge tiles past the image go to a scratch area. NCHW data are staged a segment
 * of tiles in one tile row at a time, transposed to channel-contiguous order (and back). */

/* A segment: tiles [t, t + n) of one tile row (image img, tile row ty, columns tx...). */
typedef struct { int64_t img, ty, tx, n; } FN(wino_segment);

static FN(wino_segment) FN(wino_segment_at)(const wino_schedule *s, int64_t t, int64_t t_end)
{
    FN(wino_segment) sg;
    const int64_t per_image = s->th * s->tw, r = t % per_image;
    sg.img = t / per_image;
    sg.ty = r / s->tw;
    sg.tx = r % s->tw;
    sg.n = min64(t_end - t, s->tw - sg.tx);
    return sg;
}

/* NCHW: rows i < alpha of the segment's input, padded columns [col0, col0 + cols), to
 * stage[i][col][c] (zeros outside the image). */
static void FN(wino_stage_input)(const struct i2r_winograd *w, const i2r_geom *g,
                                 const wino_schedule *s, const FN(wino_segment) *sg,
                                 const T *x, int64_t group, T *stage)
{
    const int64_t cg = w->L.cg, m = s->tile, cols = sg->n * m + 2;
    const int64_t col0 = sg->tx * m - g->pl, lo = max64(0, col0), hi = min64(g->w, col0 + cols);
    const T *plane0 = x + (sg->img * g->c + group * cg) * g->h * g->w;
    for (int64_t i = 0; i < s->alpha; i++) {
        T *row = stage + i * cols * cg;
        int64_t ih = sg->ty * m - g->pt + i;
        if (ih < 0 || ih >= g->h || hi <= lo) {
            FN(zero_channels)(row, cols * cg);
            continue;
        }
        FN(zero_channels)(row, (lo - col0) * cg);
        FN(zero_channels)(row + (hi - col0) * cg, (col0 + cols - hi) * cg);
        FN(transpose)(&w->L, plane0 + ih * g->w + lo, cg, hi - lo, g->h * g->w,
                      row + (lo - col0) * cg, cg, 1);
    }
}

/* One task: tiles [t0, t1) of group `group`, output channels of panels [pa, pb). Returns the
 * values written into V. */
static int64_t FN(wino_task)(const struct i2r_winograd *w, const i2r_geom *g,
                             const wino_schedule *s, const T *x, T *y, int64_t group,
                             int64_t t0, int64_t t1, int64_t pa, int64_t pb, T *scratch)
{
    const i2r_layout *L = &w->L;
    const KFN(gemm) ukernel = L->FN(k).gemm;
    const KFN(wino_in) wino_in = L->FN(k).wino_in;
    const KFN(wino_out) wino_out = L->FN(k).wino_out;
    const int64_t m = s->tile, a = s->alpha, a2 = s->a2, cg = L->cg, ocg = L->ocg;
    const int64_t NR = L->nr, ldm = s->ldm, ts = (int64_t)sizeof(T);
    T *V = scratch, *M = scratch + s->vbytes / ts, *zero = M + s->mbytes / ts;
    T *trash = zero + round_up64(cg * ts) / ts;
    T *stage_in = scratch + (s->vbytes + s->mbytes + s->zbytes) / ts;
    T *stage_out = stage_in + s->sibytes / ts;
    const T *px[36];
    T *py[16];

    /* input transform of the block */
    for (int64_t t = t0; t < t1;) {
        FN(wino_segment) sg = FN(wino_segment_at)(s, t, t1);
        const int64_t cols = sg.n * m + 2;
        if (!g->nhwc)
            FN(wino_stage_input)(w, g, s, &sg, x, group, stage_in);
        for (int64_t q = 0; q < sg.n; q++) {
            for (int64_t i = 0; i < a; i++) {
                int64_t ih = sg.ty * m - g->pt + i;
                for (int64_t j = 0; j < a; j++) {
                    int64_t iw = (sg.tx + q) * m - g->pl + j;
                    if (!g->nhwc)
                        px[i * a + j] = stage_in + (i * cols + q * m + j) * cg;
                    else if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w)
                        px[i * a + j] = zero;
                    else
                        px[i * a + j] = x + ((sg.img * g->h + ih) * g->w + iw) * g->c + group * cg;
                }
            }
            wino_in((int)m, (size_t)cg, px, V + (t - t0 + q) * s->vld, (size_t)cg);
        }
        t += sg.n;
    }

    /* one GEMM per position: M[p] = V[p] * U[p], panels [pa, pb) */
    const int64_t rows = t1 - t0, kcs = k_block(cg);
    const T *U = (const T *)w->packed + group * a2 * L->npanels * cg * NR;
    for (int64_t p = 0; p < a2; p++) {
        const T *vp = V + p * cg;
        T *mp = M + p * ldm;
        for (int64_t panel = pa; panel < pb; panel++) {
            const int64_t nr = min64(NR, ocg - panel * NR);
            const T *bp = U + (p * L->npanels + panel) * cg * NR;
            for (int64_t k0 = 0; k0 < cg; k0 += kcs) {
                const int64_t kc = min64(kcs, cg - k0);
                ukernel((size_t)rows, (size_t)nr, (size_t)kc, vp + k0, (size_t)s->vld,
                        bp + k0 * NR, mp + panel * NR, (size_t)s->mld, NULL,
                        k0 ? GEMM_ACCUMULATE : 0);
            }
        }
    }

    /* output transform, bias and ReLU, into y */
    const int64_t oc0 = pa * NR, noc = min64(pb * NR, ocg) - oc0;
    const T *bias = w->bias ? (const T *)w->bias + group * ocg + oc0 : NULL;
    for (int64_t t = t0; t < t1;) {
        FN(wino_segment) sg = FN(wino_segment_at)(s, t, t1);
        const int64_t cols = sg.n * m;
        for (int64_t q = 0; q < sg.n; q++) {
            for (int64_t i = 0; i < m; i++) {
                int64_t oy = sg.ty * m + i;
                for (int64_t j = 0; j < m; j++) {
                    int64_t ox = (sg.tx + q) * m + j;
                    if (!g->nhwc)
                        py[i * m + j] = stage_out + (i * cols + q * m + j) * noc;
                    else if (oy >= g->oh || ox >= g->ow)
                        py[i * m + j] = trash + (i * m + j) * ldm;
                    else
                        py[i * m + j] = y + ((sg.img * g->oh + oy) * g->ow + ox) * g->oc +
                                        group * ocg + oc0;
                }
            }
            wino_out((int)m, (size_t)noc, M + (t - t0 + q) * s->mld + oc0, (size_t)ldm,
                     bias, w->relu, py);
        }
        if (!g->nhwc) {   /* the staged rows that are in the image, to the output planes */
            const int64_t ox0 = sg.tx * m, valid = min64(cols, g->ow - ox0);
            T *plane0 = y + (sg.img * g->oc + group * ocg + oc0) * g->oh * g->ow;
            for (int64_t i = 0; i < m && sg.ty * m + i < g->oh; i++)
                FN(transpose)(L, stage_out + i * cols * noc, valid, noc, noc,
                              plane0 + (sg.ty * m + i) * g->ow + ox0, g->oh * g->ow, 1);
        }
        t += sg.n;
    }
    return rows * a2 * cg;
}

static int64_t FN(wino_thread_work)(const struct i2r_winograd *w, const i2r_geom *g,
                                    const wino_schedule *s, int debug_nan, const T *x, T *y,
                                    int *failed)
{
    int64_t capacity, copied = 0;
    T *scratch = (T *)buffer_alloc(s->thread_bytes, &capacity);
    if (!scratch) {
        *failed = 1;
    } else {
        if (debug_nan)
            for (int64_t i = 0; i < s->thread_bytes / (int64_t)sizeof(T); i++)
                scratch[i] = (T)NAN;
        memset(scratch + (s->vbytes + s->mbytes) / (int64_t)sizeof(T), 0,
               (size_t)(w->L.cg * (int64_t)sizeof(T)));   /* the zero pixel */
    }
#ifdef I2R_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t task = 0; task < s->ntasks; task++) {
        if (*failed)
            continue;
        const int64_t part = task % s->parts, unit = task / s->parts;
        const int64_t group = unit % w->L.groups, block = unit / w->L.groups;
        const int64_t t0 = block * s->tb, t1 = min64(t0 + s->tb, s->tiles);
        copied += FN(wino_task)(w, g, s, x, y, group, t0, t1,
                                part * w->L.npanels / s->parts,
                                (part + 1) * w->L.npanels / s->parts, scratch);
    }
    buffer_free(scratch, capacity);
    return copied;
}

static i2r_status FN(winograd)(const struct i2r_winograd *w, const i2r_geom *g, int nthreads,
                               int debug_nan, const void *xv, void *yv, i2r_stats *stats)
{
    wino_schedule s;
    make_wino_schedule(&s, &w->L, g, w->tile, nthreads);
    if (s.thread_bytes >= SIZE_LIMIT)
        return I2R_ETOOBIG;
    int64_t copied = 0;
    int failed = 0;
    ON_THREADS(s.threads, reduction(+ : copied) reduction(| : failed),
               copied += FN(wino_thread_work)(w, g, &s, debug_nan, (const T *)xv, (T *)yv,
                                              &failed));
    if (stats) {
        stats->threads = s.threads;
        stats->workspace_bytes = s.threads * s.thread_bytes;
        stats->copied_values = copied;
        stats->packed_bytes = w->packed_bytes;
    }
    return failed ? I2R_ENOMEM : I2R_OK;
}
