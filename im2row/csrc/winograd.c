/* Winograd's minimal filtering F(m x m, 3x3) for 3x3 stride-1 undilated convolutions, m = 2
 * or 4 (Lavin and Gray, 2016): the weight transform and its packing, the planner's choices
 * (tile, work split, scratch) and i2r_winograd_predict. The executor is winograd.template.h
 * (instantiated in conv.c), the tile transforms winograd_ukernel.template.h.
 *
 * Per output tile of m x m pixels and per group, the (m+2)^2 transform positions p each take
 * one GEMM over the channels: M[p] (tiles x OCg) = V[p] (tiles x Cg) * U[p] (Cg x OCg), with
 * V = B^T d B the input tiles and U = G g G^T the weights, transformed and packed here once
 * into NR-wide panels as the forward GEMM's weights are. Multiplications per output and
 * channel pair: (m+2)^2 / m^2 (2.25 for m = 4, 4 for m = 2) instead of 9.
 *
 * The weight transform matrices (rows of G are the evaluation points 0, 1, -1, (2, -2),
 * infinity; see winograd_ukernel.template.h for B^T and A^T):
 *   F(2x2, 3x3): G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   F(4x4, 3x3): G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
 *                     1/24 -1/12 1/6; 0 0 1]
 * U is computed in the dtype, vectorised over the output channels (gemm.h wino_w). */
#include "driver.h"

#ifdef I2R_HAVE_OPENMP
#include <omp.h>
#endif

static int applies(const i2r_geom *g)
{
    return g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1;
}

/* The cost of a Winograd call in GEMM rows times positions (each a GEMM of Cg x OCg): the
 * tiles' rows, plus the time to stream a group's weights in again for each block where they
 * do not stay in L2, counted as WINO_L3_ROWS rows (WINO_DRAM_ROWS past WINO_L3_WEIGHTS, where
 * they come from memory); a one-shot call (weights transformed for this call only) also pays
 * writing them and reading them back once. Measured (1 thread, N=1 unless said): 256 -> 256
 * channels at 14x14, N=1 and N=8, and 512 at 14x14 run faster with F(2x2) (1.2 vs 1.4 ms,
 * 8.6 vs 9.7, 5.2 vs 6.3: F(4x4)'s 9 and 38 MiB of weights stream from memory for few
 * tiles); 128-256 channels at 28x28 and up, and 512 at 7x7 N=8, with F(4x4) (0.66-0.77 of
 * F(2x2)'s time). Against the exact methods (their cost: N*OH*OW*9 rows of Cg x OCg):
 * 512 at 7x7 N=1 gains nothing (2.8 vs 2.9 ms); one-shot, 512 at 7x7 N=8 neither (19.6 vs
 * 19.1 ms), 256 at 14x14 still does (1.8 vs 2.4 ms). */
static int64_t wino_cost(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int tile,
                         int one_shot)
{
    i2r_layout L;
    wino_schedule s;
    make_wino_layout(&L, dtype, isa, g->groups, g->c / g->groups, g->oc / g->groups);
    make_wino_schedule(&s, &L, g, tile, 1);
    int64_t stream = s.weight_bytes <= l2_cache_bytes() / 2 ? 0
                   : s.weight_bytes <= WINO_L3_WEIGHTS ? WINO_L3_ROWS : WINO_DRAM_ROWS;
    int64_t rows = add_sat(s.tiles, mul_sat(s.nblocks, stream));
    if (one_shot)
        rows = add_sat(rows, 2 * (s.weight_bytes <= WINO_L3_WEIGHTS ? WINO_L3_ROWS
                                                                    : WINO_DRAM_ROWS));
    return mul_sat(rows, s.a2);
}

int i2r_winograd_tile(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
{
    if (!applies(g))
        return 0;
    /* the cheaper; a tie goes to F(2x2), the more accurate */
    return wino_cost(dtype, isa, g, 4, 0) < wino_cost(dtype, isa, g, 2, 0) ? 4 : 2;
}

int i2r_winograd_preferred(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int one_shot)
{
    if (!applies(g) || g->c / g->groups < WINO_MIN_CHANNELS ||
        g->oc / g->groups < WINO_MIN_CHANNELS)
        return 0;
    int64_t direct = MUL4(g->n, g->oh, g->ow, 9);
    return wino_cost(dtype, isa, g, i2r_winograd_tile(dtype, isa, g), one_shot) < direct;
}

void make_wino_layout(i2r_layout *L, i2r_dtype dtype, i2r_isa isa, int64_t groups, int64_t cg,
                      int64_t ocg)
{
    memset(L, 0, sizeof *L);
    L->dtype = dtype; L->isa = isa;
    L->groups = L->conv_groups = groups;
    L->kh = L->kw = L->sw = L->dw = 1;
    L->cg = cg; L->ocg = ocg; L->k = cg;
    set_kernels(L, dtype, isa);
    L->npanels = cdiv(ocg, L->nr);
    L->col_step = 1; L->rot_unit = 1; L->nrot = 1;
}

/* A row length of at least n values that is an odd number of cache lines: the GEMM's
 * register tile reads and writes rows this far apart, and rows a multiple of 4 KiB apart
 * (F(2x2) with 64 channels: 16 x 64 floats) would all fall into one L1 set. */
static int64_t odd_lines(int64_t n, int64_t ts)
{
    int64_t lines = cdiv(mul_sat(n, ts), 64);
    return (lines | 1) * 64 / ts;
}

void make_wino_schedule(wino_schedule *s, const i2r_layout *L, const i2r_geom *g, int tile,
                        int nthreads)
{
    const int64_t ts = (int64_t)dtype_size(L->dtype), mr = L->mr;
    memset(s, 0, sizeof *s);
    s->tile = tile;
    s->alpha = tile + 2;
    s->a2 = s->alpha * s->alpha;
    s->th = cdiv(g->oh, tile);
    s->tw = cdiv(g->ow, tile);
    s->tiles = MUL3(g->n, s->th, s->tw);
    s->ldm = L->npanels * L->nr;
    /* a block's V and M (all positions) in half the L2; where the weights of a group do not
     * fit there too, they come from L3 or memory once per block: then at least
     * WINO_STREAM_ROWS rows, so that each weight read serves as many multiply-adds (V and M
     * pass L2 then, a position at a time) */
    int64_t per_tile = MUL3(s->a2, L->cg + s->ldm, ts);
    s->weight_bytes = MUL4(s->a2, L->cg, s->ldm, ts);
    int64_t tb = l2_cache_bytes() / 2 / max64(per_tile, 1);
    if (s->weight_bytes > l2_cache_bytes() / 2)
        tb = max64(tb, WINO_STREAM_ROWS);
    tb = min64(max64(tb / mr * mr, WINO_MIN_TILES * mr), WINO_MAX_TILES * mr);
    s->tb = max64(mr, min64(tb, cdiv(s->tiles, mr) * mr));   /* no tile (N = 0): one row tile */
    s->nblocks = cdiv(s->tiles, s->tb);
    int64_t units = mul_sat(L->groups, s->nblocks);
    /* too few blocks for the threads: split the output channels' panels too (each part
     * transforms its block's input again: (m+2)^2 * Cg values against the GEMM's
     * (m+2)^2 * Cg * OCg/parts multiply-adds) */
    s->parts = 1;
    if (nthreads > 1 && units < TASKS_PER_THREAD * nthreads)
        s->parts = min64(L->npanels, cdiv(TASKS_PER_THREAD * nthreads, units));
    s->ntasks = mul_sat(units, s->parts);
    s->threads = min64(nthreads, s->ntasks);
    s->seg = min64(s->tb, s->tw);
    s->vld = odd_lines(mul_sat(s->a2, L->cg), ts);
    s->mld = odd_lines(mul_sat(s->a2, s->ldm), ts);
    s->vbytes = MUL3(s->tb, s->vld, ts);
    s->mbytes = MUL3(s->tb, s->mld, ts);
    s->zbytes = round_up64(L->cg * ts) + round_up64(MUL4(tile, tile, s->ldm, ts));
    if (!g->nhwc) {   /* staged segments of NHWC-ordered input and output */
        s->sibytes = round_up64(MUL4(s->alpha, s->seg * tile + 2, L->cg, ts));
        s->sobytes = round_up64(MUL5(tile, s->seg, tile, s->ldm, ts));
    }
    s->thread_bytes = add_sat(add_sat(s->vbytes, s->mbytes),
                              add_sat(s->zbytes, add_sat(s->sibytes, s->sobytes)));
}

i2r_status i2r_winograd_predict(i2r_dtype dtype, i2r_isa isa, int tile, const i2r_geom *g,
                                int nthreads, int with_bias, i2r_stats *stats)
{
    i2r_layout L;
    wino_schedule s;
    if ((tile != 2 && tile != 4) || !applies(g) || nthreads < 1)
        return I2R_EINVAL;
    make_wino_layout(&L, dtype, isa, g->groups, g->c / g->groups, g->oc / g->groups);
    make_wino_schedule(&s, &L, g, tile, nthreads);
    const int64_t ts = (int64_t)dtype_size(dtype);
    stats->threads = s.threads;
    stats->workspace_bytes = mul_sat(s.threads, s.thread_bytes);
    stats->copied_values = MUL5(s.tiles, s.parts, s.a2, L.cg, L.groups);
    stats->packed_bytes = add_sat(round_up64(MUL5(L.groups, s.a2, s.ldm, L.cg, ts)),
                                  with_bias ? round_up64(g->oc * ts) : 0);
    if (stats->workspace_bytes >= SIZE_LIMIT || stats->copied_values >= SIZE_LIMIT ||
        stats->packed_bytes >= SIZE_LIMIT)
        return I2R_ETOOBIG;
    return I2R_OK;
}

/* Transform and pack the rows [r0, r1) of (group, channel) pairs, a weight panel at a time:
 * consecutive rows of one panel are consecutive NR-value rows of its (m+2)^2 positions, so
 * the stores run as (m+2)^2 sequential streams (row-major over all panels at once, 512 -> 512
 * channels wrote 576 interleaved streams: 12 ms a plan for F(4x4)). Each row's taps are read
 * in place where the output channels are contiguous (HWIO), else gathered per panel. */
#define PACK_ROWS(T, SFX)                                                                    \
static int pack_rows_##SFX(const struct i2r_winograd *w, const T *wm, const int64_t ws[5],   \
                           int64_t r0, int64_t r1)                                           \
{                                                                                            \
    const i2r_layout *L = &w->L;                                                             \
    const int64_t cg = L->cg, ocg = L->ocg, NR = L->nr, a2 = (w->tile + 2) * (w->tile + 2);  \
    const int64_t ustride = L->npanels * cg * NR;   /* between positions */                  \
    const int in_place = ws[4] == 1;                                                         \
    T *buf = in_place ? NULL : malloc((size_t)(9 * NR) * sizeof(T));                         \
    if (!in_place && !buf)                                                                   \
        return 0;                                                                            \
    for (int64_t panel = 0; panel < L->npanels; panel++) {                                   \
        const int64_t o0 = panel * NR, nr = min64(NR, ocg - o0);                             \
        for (int64_t r = r0; r < r1; r++) {                                                  \
            const int64_t grp = r / cg, c = r % cg;                                          \
            const T *taps[9];                                                                \
            for (int64_t k = 0; k < 9; k++) {                                                \
                const T *src = wm + grp * ws[0] + (k / 3) * ws[1] + (k % 3) * ws[2] +        \
                               c * ws[3] + o0 * ws[4];                                       \
                if (in_place) {                                                              \
                    taps[k] = src;                                                           \
                    continue;                                                                \
                }                                                                            \
                for (int64_t o = 0; o < nr; o++)                                             \
                    buf[k * NR + o] = src[o * ws[4]];                                        \
                taps[k] = buf + k * NR;                                                      \
            }                                                                                \
            T *dst = (T *)w->packed + ((grp * a2 * L->npanels + panel) * cg + c) * NR;       \
            L->k_##SFX.wino_w(w->tile, (size_t)nr, taps, dst, (size_t)ustride);              \
            for (int64_t p = 0; nr < NR && p < a2; p++)   /* lanes past OCg: zero */         \
                memset(dst + p * ustride + nr, 0, (size_t)(NR - nr) * sizeof(T));            \
        }                                                                                    \
    }                                                                                        \
    free(buf);                                                                               \
    return 1;                                                                                \
}
PACK_ROWS(float, f32)
PACK_ROWS(double, f64)
#undef PACK_ROWS

static int pack_rows(const struct i2r_winograd *w, const void *wm, const int64_t ws[5],
                     int64_t r0, int64_t r1)
{
    return w->L.dtype == I2R_F64 ? pack_rows_f64(w, wm, ws, r0, r1)
                                 : pack_rows_f32(w, wm, ws, r0, r1);
}

i2r_status i2r_winograd_pack(i2r_dtype dtype, i2r_isa isa, int tile, const void *wm,
                             const int64_t wstride[5], const void *bias, int64_t groups,
                             int64_t cg, int64_t ocg, int relu, int nthreads,
                             i2r_winograd **out)
{
    *out = NULL;
    if (tile != 2 && tile != 4)
        return I2R_EINVAL;
    i2r_winograd *w = calloc(1, sizeof *w);
    if (!w)
        return I2R_ENOMEM;
    make_wino_layout(&w->L, dtype, isa, groups, cg, ocg);
    w->tile = tile;
    w->relu = relu;
    const int64_t ts = (int64_t)dtype_size(dtype), a2 = (tile + 2) * (tile + 2);
    int64_t pbytes = MUL5(groups, a2, w->L.npanels * w->L.nr, cg, ts);
    int64_t bbytes = bias ? mul_sat(groups * ocg, ts) : 0;
    if (add_sat(round_up64(pbytes), round_up64(bbytes)) >= SIZE_LIMIT) {
        free(w);
        return I2R_ETOOBIG;
    }
    w->packed = buffer_alloc(pbytes, &w->packed_capacity);
    w->bias = buffer_alloc(bbytes, &w->bias_capacity);
    w->packed_bytes = round_up64(pbytes) + round_up64(bbytes);
    if ((pbytes && !w->packed) || (bbytes && !w->bias)) {
        i2r_winograd_free(w);
        return I2R_ENOMEM;
    }
    if (bbytes)
        memcpy(w->bias, bias, (size_t)bbytes);
    const int64_t rows = groups * cg;
    int ok = 1;
    if (nthreads > 1 && pbytes > PACK_PARALLEL_BYTES && rows > 1) {
        int64_t nt = min64(nthreads, rows);
#ifdef I2R_HAVE_OPENMP
#pragma omp parallel for num_threads((int)nt) reduction(& : ok)
#endif
        for (int64_t t = 0; t < nt; t++)
            ok &= pack_rows(w, wm, wstride, t * rows / nt, (t + 1) * rows / nt);
    } else {
        ok = pack_rows(w, wm, wstride, 0, rows);
    }
    if (!ok) {
        i2r_winograd_free(w);
        return I2R_ENOMEM;
    }
    *out = w;
    return I2R_OK;
}

void i2r_winograd_free(i2r_winograd *w)
{
    if (!w) return;
    buffer_free(w->packed, w->packed_capacity);
    buffer_free(w->bias, w->bias_capacity);
    free(w);
}

int64_t i2r_winograd_packed_bytes(const i2r_winograd *w) { return w->packed_bytes; }
