/* The convolution driver: weight packing, work split, per-thread scratch and the dtype
 * dispatch. The per-dtype loops (strip fill, lowering, GEMM blocking) are in
 * conv.template.h, instantiated below for float and double.
 *
 * The strip (method I2R_STRIP), for one image, one group and a run of output columns:
 *
 *   strip row r (padded input row r), KW slots of Cg channels:   [slot 0 | slot 1 | slot 2]
 *   im2row row oh of output column j = the KH*KW*Cg values from strip row oh*sh on
 *   (rows overlap: nothing is copied to form them); for dh > 1 its KH segments of KW*Cg
 *   values are dh*KW*Cg apart.
 *
 * Kernel tap kw of column j reads padded input column j*sw + kw*dw. Output columns j and j+t
 * share taps when t*sw = m*dw (t = dw/gcd(sw, dw), m = sw/gcd(sw, dw)): tap kw+m of j is tap
 * kw of j+t. So columns are walked in chains j = r, r+t, r+2t, ... and the taps of chain
 * position q sit in slots rotated by rot = q*m mod KW (tap kw in slot (kw + rot) mod KW): a
 * step writes only the m new taps, into the slots of the m that left. The weights are packed
 * once per rotation (multiples of gcd(m, KW)), so the strip is never shifted. When m >= KW
 * consecutive columns share nothing and every step refills all KW slots (rotation 0).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "i2r.h"

#ifdef I2R_HAVE_OPENMP
#include <omp.h>
#endif

enum { KC = 256,          /* K block: a 256 x NR weight block stays in L1 (GEMM-NOTES) */
       KC_WHOLE = 1152,   /* ... but K up to this is not split (fewer passes over C) */
       MC_TILES = 8,      /* M block for long GEMMs: 8 register tiles of A rows in L2 */
       JB = 32,           /* output columns gathered before an NCHW output is transposed
                             (measured: 16 -> 32 took the NCHW stem from 1.47 to 1.20 ms)... */
       JB_MIN = 16,       /* ... fewer (not below JB_MIN) where JB columns pass JB_BYTES */
       SB = 16,           /* NCHW input columns transposed at once for the strip fill */
       TASKS_PER_THREAD = 2, /* tasks per thread, taken dynamically (see make_schedule) */
       MIN_ROWS = 8,      /* I2R_FULL: a thread's chunk is at least MIN_ROWS register tiles */
       STACK_ROWS = 512,  /* I2R_FULL: small images are stacked into GEMMs of this many rows */
       STRIP_STACK_BELOW = 28, /* I2R_STRIP: images with fewer output rows are stacked... */
       STRIP_STACK_ROWS = 112, /* ... into one strip whose column GEMM has about this many rows */
       STRIP_STACK_MAX = 16 };
#define MAX_ROTATION_BYTES ((int64_t)64 << 20)
#define JB_BYTES ((int64_t)1 << 20)

/* The kernel-independent layout of packed weights and the strip walk (no data).
 * groups/cg/ocg are per task: a depthwise convolution (C groups of one channel in and one
 * out) runs as one "group" of C channels whose taps are multiplied channel by channel
 * (dwconv microkernel) instead of a GEMM per channel. */
typedef struct {
    i2r_dtype dtype;
    i2r_isa isa;
    int64_t groups, kh, kw, cg, ocg, sw, dw;
    int64_t conv_groups;   /* groups of the convolution (== groups unless depthwise) */
    int depthwise;
    int64_t k;             /* kh*kw*cg */
    int64_t mr, nr, npanels;
    int64_t col_step;      /* t */
    int64_t rot_step;      /* m, or 0 when consecutive columns share no tap */
    int64_t rot_unit;      /* gcd(m, kw): rotations are multiples of it */
    int64_t nrot;          /* rotations packed */
    void *fn;              /* GEMM microkernel */
    void *dwconv;          /* depthwise microkernel */
    void *dwplane;         /* depthwise NCHW-plane microkernel */
    int64_t tr;            /* transpose tile */
    void *transpose;       /* transpose microkernel */
} i2r_layout;

struct i2r_weights {
    i2r_layout L;
    int relu;
    void *packed;          /* [G][nrot][npanels][K][NR] */
    void *bias;            /* [G][npanels*NR], or NULL */
    void *rows;            /* 1x1 only: [G][OCg][Cg], the A operand of pointwise NCHW */
    int64_t packed_bytes;
};

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) { int64_t t = a % b; a = b; b = t; }
    return a;
}

/* Values of one group's packed weights for one rotation. */
static int64_t rotation_size(const i2r_layout *L)
{
    return L->depthwise ? L->k : L->npanels * L->k * L->nr;
}

static size_t dtype_size(i2r_dtype d) { return d == I2R_F64 ? sizeof(double) : sizeof(float); }

/* rotations = 0 packs rotation 0 only (enough for I2R_FULL; a strip then refills all KW slots
 * at every column). Rotations are also dropped when their copies would pass
 * MAX_ROTATION_BYTES (very wide kernels: the packed size grows like KW^2). */
static void make_layout(i2r_layout *L, i2r_dtype dtype, i2r_isa isa, int64_t groups,
                        int64_t kh, int64_t kw, int64_t cg, int64_t ocg, int64_t sw, int64_t dw,
                        int rotations)
{
    gemm_kernel gk = gemm_select(isa, dtype);
    int64_t g0 = gcd64(sw, dw);
    L->dtype = dtype; L->isa = isa;
    L->conv_groups = groups;
    L->depthwise = groups > 1 && cg == 1 && ocg == 1;
    if (L->depthwise) {    /* one task group of all channels */
        cg = ocg = groups;
        groups = 1;
    }
    L->groups = groups; L->kh = kh; L->kw = kw; L->cg = cg; L->ocg = ocg;
    L->sw = sw; L->dw = dw;
    L->k = kh * kw * cg;
    L->mr = gk.mr; L->nr = gk.nr; L->fn = gk.fn; L->dwconv = gk.dwconv; L->dwplane = gk.dwplane;
    L->tr = gk.tr; L->transpose = gk.transpose;
    L->npanels = L->depthwise ? 1 : (ocg + gk.nr - 1) / gk.nr;
    L->col_step = dw / g0;
    L->rot_step = sw / g0;
    L->rot_unit = L->rot_step < kw ? gcd64(L->rot_step, kw) : kw;
    int64_t copies_bytes = groups * (kw / L->rot_unit) * rotation_size(L) *
                           (int64_t)dtype_size(dtype);
    if (L->rot_step >= kw || !rotations ||
        (kw / L->rot_unit > 1 && copies_bytes > MAX_ROTATION_BYTES)) {
        /* no tap shared (or no rotated copies): natural column order, full refills */
        L->col_step = 1;
        L->rot_step = 0;
        L->rot_unit = kw;
    }
    L->nrot = kw / L->rot_unit;
}


/* Scratch is 64-byte aligned and rounded up to whole cache lines. */
static int64_t round_up64(int64_t bytes) { return (bytes + 63) & ~(int64_t)63; }

static void *alloc64(int64_t bytes)
{
    return bytes > 0 ? aligned_alloc(64, (size_t)round_up64(bytes)) : NULL;
}

/* Padded input rows [pt, min(pt + H, strip_rows)) hold input; the others are padding. */
static int64_t strip_input_rows(const i2r_geom *g, int64_t strip_rows)
{
    int64_t end = g->pt + g->h < strip_rows ? g->pt + g->h : strip_rows;
    return end > g->pt ? end - g->pt : 0;
}

/* ---- the work split, shared by i2r_predict and i2r_conv so that they agree ---- */

typedef struct {
    int64_t ntasks;
    int64_t parts;               /* I2R_STRIP: column blocks (or panel ranges) per image and
                                    group; I2R_FULL/BLOCKED: pixel chunks per group (over
                                    the whole batch) */
    int64_t chunk;               /* I2R_FULL/BLOCKED: pixels (im2row rows) per task */
    int64_t strip_rows;          /* I2R_STRIP: padded input rows one image's GEMM rows read */
    int64_t stack;               /* I2R_STRIP: images stacked in one strip (N > 1, small OH) */
    int64_t block_rows;          /* strip rows of one stacked image (a multiple of sh) */
    int64_t stack_rows;          /* strip rows of a full stack */
    int64_t gemm_rows;           /* rows of a full stack's column GEMM (straddling rows
                                    included, their results dropped) */
    int64_t jb;                  /* NCHW: output columns transposed together */
    int64_t thread_bytes;        /* scratch of one thread */
    int64_t threads;
    int direct;                  /* I2R_FULL on a 1x1, stride-1, unpadded NHWC input */
    int pointwise_nchw;          /* I2R_FULL on a 1x1, stride-1, unpadded NCHW input */
    int blocked;                 /* I2R_BLOCKED (not depthwise): A blocks lowered in the GEMM */
    int64_t abytes, cbytes;      /* scratch parts: I2R_STRIP: the strip, the column results;
                                    I2R_FULL/BLOCKED: A (matrix or block), the NCHW result;
                                    then the NCHW input stage or slab */
    int plane;                   /* I2R_STRIP, depthwise, NCHW: whole channel planes */
    int64_t plane_cols;          /* plane: padded input columns the outputs read */
    int split_oc;                /* I2R_STRIP: parts split the output channels (NCHW), not
                                    the columns */
} schedule;

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The K block of the GEMM: whole up to KC_WHOLE, else equal blocks of at most KC. */
static int64_t k_block(int64_t seglen)
{
    int64_t nkb = seglen <= KC_WHOLE ? 1 : cdiv(seglen, KC);
    return cdiv(seglen, nkb);
}

/* Share of the register tiles' rows a GEMM of m rows, `valid` of them kept, fills. */
static double tile_fill(int64_t valid, int64_t m, int64_t mr)
{
    return (double)valid / (double)(cdiv(m, mr) * mr);
}

static void make_schedule(schedule *s, const i2r_layout *L, const i2r_geom *g,
                          i2r_method method, int nthreads)
{
    size_t ts = dtype_size(L->dtype);
    memset(s, 0, sizeof *s);
    /* With several threads, aim at TASKS_PER_THREAD times as many tasks as threads (taken
     * dynamically), so that a thread the OS preempts (the machine may be shared; OpenBLAS
     * threads may still be spinning) holds back only a small task. */
    int64_t want = nthreads <= 1 ? 1 : (int64_t)nthreads * TASKS_PER_THREAD;
    if (method == I2R_STRIP && L->depthwise && !g->nhwc) {
        /* Depthwise on NCHW: a channel's padded plane is small and its outputs are a direct
         * 2-D convolution of it, vectorised along the output rows; a strip of one channel
         * would feed a one-wide GEMM. Tasks are blocks of channels. */
        s->plane = 1;
        s->strip_rows = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
        s->plane_cols = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
        s->parts = min64(want > g->n ? cdiv(want, g->n) : 1, L->cg);
        s->ntasks = g->n * s->parts;
        s->thread_bytes = round_up64(s->strip_rows * s->plane_cols * (int64_t)ts) +
                          round_up64(g->kh * g->kw * (int64_t)ts);
    } else if (method == I2R_STRIP) {
        /* Images with few output rows are stacked: blocks of block_rows strip rows, one per
         * image, so that one column GEMM covers the column of every image in the stack. A
         * GEMM row (strip row i*sh on) that straddles two blocks is computed and dropped. */
        s->strip_rows = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
        s->stack = 1;
        s->block_rows = s->strip_rows;
        if (g->oh < STRIP_STACK_BELOW && g->n > 1 && tile_fill(g->oh, g->oh, L->mr) < 0.75) {
            /* Columns of a few rows fill the register tiles poorly (7 rows: half a 14-row
             * tile) and stream all the weights for those few rows: stack as many images as
             * keep the tiles at least 3/4 full. 14-row columns fill the tile exactly and
             * measured slower stacked. */
            int64_t per_image = cdiv(s->strip_rows, g->sh);   /* GEMM rows of one block */
            int64_t most = min64(min64(STRIP_STACK_MAX, g->n),
                                 max64(1, STRIP_STACK_ROWS / per_image));
            for (int64_t k = most; k > 1 && s->stack == 1; k--)
                if (tile_fill(k * g->oh, (k - 1) * per_image + g->oh, L->mr) >= 0.75)
                    s->stack = k;
            s->stack = cdiv(g->n, cdiv(g->n, s->stack));   /* even stacks */
            s->block_rows = per_image * g->sh;
        }
        s->stack_rows = (s->stack - 1) * s->block_rows + s->strip_rows;
        s->gemm_rows = (s->stack - 1) * (s->block_rows / g->sh) + g->oh;
        int64_t units = cdiv(g->n, s->stack) * L->groups;
        s->split_oc = !g->nhwc;
        s->parts = min64(want > units ? cdiv(want, units) : 1,
                         s->split_oc ? L->npanels : g->ow);
        s->ntasks = units * s->parts;
        /* the strip; NCHW: jb output columns transposed into NCHW together and SB input
         * columns (of each stacked image) transposed out of NCHW together; NHWC stacks: the
         * column's results, whose valid rows are copied out */
        s->abytes = round_up64(s->stack_rows * L->kw * L->cg * (int64_t)ts);
        if (!g->nhwc) {
            int64_t column = s->gemm_rows * L->ocg * (int64_t)ts;
            s->jb = max64(JB_MIN, min64(JB, JB_BYTES / column / 8 * 8));
            s->cbytes = round_up64(s->jb * column);
        }
        else if (s->stack > 1)
            s->cbytes = round_up64(s->gemm_rows * L->ocg * (int64_t)ts);
        s->thread_bytes = s->abytes + s->cbytes;
        if (!g->nhwc)
            s->thread_bytes += round_up64(s->stack * strip_input_rows(g, s->strip_rows) * SB *
                                          L->cg * (int64_t)ts);
    } else {
        /* One GEMM per image's im2row matrix; small images are stacked into GEMMs of up to
         * STACK_ROWS rows (more rows per pass over the weights); threads get chunks of at
         * least MIN_ROWS rows where there are enough. */
        int64_t total = g->n * g->oh * g->ow;
        int64_t chunk = cdiv(total, max64(1, cdiv(want, L->groups)));
        chunk = max64(chunk, min64(MIN_ROWS * L->mr, cdiv(total, nthreads)));
        chunk = min64(chunk, min64(total, max64(g->oh * g->ow, STACK_ROWS)));
        s->parts = cdiv(total, chunk);
        s->chunk = chunk = cdiv(total, s->parts);   /* equal chunks: no short last GEMM */
        s->ntasks = L->groups * s->parts;
        int pointwise = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 &&
                        g->pt == 0 && g->pb == 0 && g->pl == 0 && g->pr == 0;
        s->direct = pointwise && g->nhwc;
        s->pointwise_nchw = pointwise && !g->nhwc && !L->depthwise;
        s->blocked = method == I2R_BLOCKED && !pointwise && !L->depthwise;
        if (s->pointwise_nchw)   /* the pixels packed in NR-wide panels */
            s->abytes = round_up64(cdiv(chunk, L->nr) * L->nr * L->cg * (int64_t)ts);
        else if (s->blocked)     /* one A block: MC rows of a K block */
            s->abytes = round_up64(L->mr * MC_TILES * k_block(L->k) * (int64_t)ts);
        else if (!s->direct)     /* the chunk's whole im2row matrix */
            s->abytes = round_up64(chunk * L->k * (int64_t)ts);
        s->thread_bytes = s->abytes;
        if (!g->nhwc && !s->pointwise_nchw) {
            /* the GEMM result before its transpose into NCHW, and the input rows transposed
             * out of NCHW: blocked, every image the chunk touches; else at most one image */
            int64_t images = s->blocked ? min64(g->n, cdiv(chunk, g->oh * g->ow) + 1) : 1;
            s->cbytes = round_up64(chunk * L->ocg * (int64_t)ts);
            s->thread_bytes += s->cbytes +
                               round_up64(images * g->h * g->w * L->cg * (int64_t)ts);
        }
    }
    s->threads = min64(nthreads, s->ntasks);
#ifndef I2R_HAVE_OPENMP
    s->threads = 1;
#endif
    if (s->threads < 1)
        s->threads = 1;
}

/* A strip task: output columns at positions [p0, p1) (chain order, see position_to_chain)
 * and output channels of weight panels [pa, pb). NHWC work is split by columns; NCHW work by
 * panels, so that no two threads write into the same cache line of an NCHW output row. */
static void task_range(const schedule *s, const i2r_layout *L, int64_t b, int64_t ow,
                       int64_t *p0, int64_t *p1, int64_t *pa, int64_t *pb)
{
    if (s->split_oc) {
        *p0 = 0; *p1 = ow;
        *pa = b * L->npanels / s->parts; *pb = (b + 1) * L->npanels / s->parts;
    } else {
        *p0 = b * ow / s->parts; *p1 = (b + 1) * ow / s->parts;
        *pa = 0; *pb = L->npanels;
    }
}

/* Position p -> chain r and index q in the chain (column j = r + q*t). */
static void position_to_chain(int64_t p, int64_t ow, int64_t t, int64_t *r, int64_t *q)
{
    int64_t rr = 0;
    for (;;) {
        int64_t len = (ow - rr + t - 1) / t;
        if (p < len) break;
        p -= len;
        rr++;
    }
    *r = rr;
    *q = p;
}

/* Taps a strip step writes: all KW at the start of a task or chain (or when no tap is
 * shared), else the m new ones. */
static int64_t step_new_taps(const i2r_layout *L, int first, int64_t q)
{
    return (first || q == 0 || L->rot_step == 0) ? L->kw : L->rot_step;
}

/* Plane: padded columns [pl, min(pl + W, plane_cols)) hold input. */
static int64_t plane_input_cols(const i2r_geom *g, const schedule *s)
{
    return max64(0, min64(g->pl + g->w, s->plane_cols) - g->pl);
}

static int64_t count_copied(const i2r_layout *L, const i2r_geom *g, i2r_method method,
                            const schedule *s)
{
    int64_t per_image = 0;
    if (method != I2R_STRIP)
        return s->direct ? 0 : g->n * L->groups * g->oh * g->ow * L->k;
    if (s->plane)
        return g->n * L->cg * strip_input_rows(g, s->strip_rows) * plane_input_cols(g, s);
    for (int64_t b = 0; b < s->parts; b++) {
        int64_t p0, p1, pa, pb, r, q;
        task_range(s, L, b, g->ow, &p0, &p1, &pa, &pb);
        if (p0 >= p1) continue;
        position_to_chain(p0, g->ow, L->col_step, &r, &q);
        for (int64_t p = p0; p < p1; p++) {
            int64_t len = (g->ow - r + L->col_step - 1) / L->col_step;
            per_image += step_new_taps(L, p == p0, q);
            if (++q == len) { q = 0; r++; }
        }
    }
    return g->n * L->groups * per_image * strip_input_rows(g, s->strip_rows) * L->cg;
}

/* ---- per-dtype code ---- */

#define T float
#define SFX f32
#define GEMM_FN gemm_f32_fn
#include "conv.template.h"

#define T double
#define SFX f64
#define GEMM_FN gemm_f64_fn
#include "conv.template.h"

/* ---- the C surface ---- */

/* 1x1 weights are also kept as A rows, for pointwise NCHW. */
static int has_rows(const i2r_layout *L) { return L->kh == 1 && L->kw == 1 && !L->depthwise; }

/* Bytes of the packed weights (rows included) and of the padded bias. */
static void packed_sizes(const i2r_layout *L, int with_bias, int64_t *pbytes, int64_t *bbytes)
{
    int64_t ts = (int64_t)dtype_size(L->dtype);
    int64_t bias_width = L->depthwise ? L->ocg : L->npanels * L->nr;
    *pbytes = L->groups * L->nrot * rotation_size(L) * ts;
    if (has_rows(L))
        *pbytes = round_up64(*pbytes) + L->groups * L->ocg * L->cg * ts;
    *bbytes = with_bias ? L->groups * bias_width * ts : 0;
}

i2r_status i2r_pack_weights(i2r_dtype dtype, i2r_isa isa, const void *wm,
                            const int64_t wstride[5], const void *bias,
                            int64_t groups, int64_t kh, int64_t kw, int64_t cg, int64_t ocg,
                            int64_t sw, int64_t dw, int rotations, int relu, i2r_weights **out)
{
    i2r_weights *w = calloc(1, sizeof *w);
    int64_t pbytes, bbytes;
    *out = NULL;
    if (!w)
        return I2R_ENOMEM;
    make_layout(&w->L, dtype, isa, groups, kh, kw, cg, ocg, sw, dw, rotations);
    w->relu = relu;
    packed_sizes(&w->L, bias != NULL, &pbytes, &bbytes);
    w->packed = alloc64(pbytes);
    if (has_rows(&w->L))   /* the rows follow the panels in the same allocation */
        w->rows = (char *)w->packed + round_up64(w->L.groups * w->L.nrot *
                                                  rotation_size(&w->L) *
                                                  (int64_t)dtype_size(dtype));
    w->bias = alloc64(bbytes);
    w->packed_bytes = round_up64(pbytes) + round_up64(bbytes);
    if ((pbytes && !w->packed) || (bbytes && !w->bias)) {
        i2r_free_weights(w);
        return I2R_ENOMEM;
    }
    if (dtype == I2R_F64)
        pack_weights_f64(&w->L, wm, wstride, bias, w->packed, w->bias, w->rows);
    else
        pack_weights_f32(&w->L, wm, wstride, bias, w->packed, w->bias, w->rows);
    *out = w;
    return I2R_OK;
}

void i2r_free_weights(i2r_weights *w)
{
    if (!w) return;
    free(w->packed);
    free(w->bias);
    free(w);
}

int64_t i2r_packed_bytes(const i2r_weights *w) { return w->packed_bytes; }

static int geometry_matches(const i2r_layout *L, const i2r_geom *g)
{
    return g->groups == L->conv_groups && g->kh == L->kh && g->kw == L->kw &&
           g->c == L->cg * L->groups && g->oc == L->ocg * L->groups && g->sw == L->sw &&
           g->dw == L->dw && g->n > 0 && g->h > 0 && g->w > 0 && g->oh > 0 && g->ow > 0 &&
           L->cg > 0 && L->ocg > 0 && g->ow0 >= 0;
}

i2r_status i2r_predict(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, i2r_method method,
                       int nthreads, int rotations, int with_bias, i2r_stats *stats)
{
    i2r_layout L;
    schedule s;
    int64_t pbytes, bbytes;
    if (g->groups < 1 || g->c % g->groups || g->oc % g->groups || nthreads < 1)
        return I2R_EINVAL;
    make_layout(&L, dtype, isa, g->groups, g->kh, g->kw, g->c / g->groups, g->oc / g->groups,
                g->sw, g->dw, rotations);
    if (!geometry_matches(&L, g))
        return I2R_EINVAL;
    make_schedule(&s, &L, g, method, nthreads);
    packed_sizes(&L, with_bias, &pbytes, &bbytes);
    stats->threads = s.threads;
    stats->workspace_bytes = s.threads * s.thread_bytes;
    stats->copied_values = count_copied(&L, g, method, &s);
    stats->packed_bytes = round_up64(pbytes) + round_up64(bbytes);
    return I2R_OK;
}

i2r_status i2r_conv(const i2r_weights *w, const i2r_geom *g, i2r_method method, int nthreads,
                    int debug_nan, const void *x, void *y, i2r_stats *stats)
{
    if (!geometry_matches(&w->L, g) || nthreads < 1)
        return I2R_EINVAL;
    if (w->L.dtype == I2R_F64)
        return conv_f64(w, g, method, nthreads, debug_nan, x, y, stats);
    return conv_f32(w, g, method, nthreads, debug_nan, x, y, stats);
}
