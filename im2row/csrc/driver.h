/* Internals shared by the driver's files (no Python, not part of the C surface i2r.h).
 *
 * The driver is split by what each part does:
 *   plan.c                 the layout of packed weights, the work split (schedule), the
 *                          method "auto" runs, and every buffer size (i2r_predict)
 *   pack.c, pack.template.h                      weight packing
 *   conv.c                 the executor (i2r_conv), instantiating per dtype:
 *     kernels.template.h   the blocked GEMM over the microkernels, copies, transposes
 *     strip.template.h     I2R_STRIP: the reusable im2row strip
 *     lowered.template.h   I2R_FULL / I2R_BLOCKED: the im2row matrix, whole or by blocks
 *     depthwise.template.h depthwise convolution of NCHW channel planes
 *     execute.template.h   per-thread scratch and the task loop
 *     grad_weight.template.h  the weight gradient (i2r_grad_weight), on the same lowering
 *                          and microkernels
 *     scatter.template.h   the transposed convolution in scatter form (few output channels)
 *     winograd.template.h  Winograd F(2x2, 3x3) / F(4x4, 3x3) (i2r_winograd_conv)
 *   winograd.c             Winograd's weight transform and packing, tile choice, work split
 */
#ifndef IM2ROW_DRIVER_H
#define IM2ROW_DRIVER_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "i2r.h"

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)   /* per-dtype name: FN(conv) is conv_f32 or conv_f64 */
#define KFN_(kind, sfx) kind##_##sfx##_fn
#define KFN_AT(kind, sfx) KFN_(kind, sfx)
#define KFN(kind) KFN_AT(kind, SFX)   /* per-dtype kernel type: KFN(gemm) is gemm_f32_fn */

enum { KC = 256,          /* K block: a 256 x NR weight block stays in L1 (GEMM-NOTES) */
       KC_WHOLE = 1152,   /* ... but K up to this is not split (fewer passes over C) */
       MC_TILES = 8,      /* M block for long GEMMs: 8 register tiles of A rows in L2 */
       JB = 32,           /* output columns gathered before an NCHW output is transposed
                             (measured: 16 -> 32 took the NCHW stem from 1.47 to 1.20 ms)... */
       JB_MIN = 16,       /* ... fewer (not below JB_MIN) where JB columns pass JB_BYTES */
       ROWS_JB_MIN = 4,   /* rows_out: at least this many columns gathered (1/8 of the
                             lines of an output row partial, at most) */
       SB = 16,           /* NCHW input columns transposed at once for the strip fill */
       TASKS_PER_THREAD = 2, /* tasks per thread, taken dynamically (see make_schedule) */
       MIN_ROWS = 8,      /* I2R_FULL: a thread's chunk is at least MIN_ROWS register tiles */
       STACK_ROWS = 512,  /* I2R_FULL: small images are stacked into GEMMs of this many rows */
       STRIP_STACK_BELOW = 28, /* I2R_STRIP: images with fewer output rows are stacked... */
       STRIP_STACK_ROWS = 112, /* ... into one strip whose column GEMM has about this many rows */
       STRIP_STACK_MAX = 16,
       STRIP_MIN_ROWS = 28,   /* "auto": the strip needs columns of at least this many rows... */
       MAX_ROTATIONS = 16,    /* depthwise: wider kernels (KW > 16) refill every slot */
       DWPLANE_BLOCK_BYTES = 8192, /* depthwise NCHW: outputs convolved at a time (in L1) */
       RUN_MIN_CHANNELS = 32, /* strip: fewer channels pack a copy per rotation (make_layout) */
       GEMM_MAX_SEGS = 64,    /* K runs gemm_segmented takes (more: a GEMM pass per run) */
       PACK_TASK_ROWS = 256,  /* packing: source rows of one threaded task */
       PACK_PREFETCH_BYTES = 512, /* OIHW packing: prefetch distance along each row */
       DEFERRED_ROW_BLOCKS = 2 }; /* one-off NHWC calls of up to this many row blocks of
                                     pixels pack their weights in the GEMM (i2r_pack_flags) */
#define MAX_ROTATION_BYTES ((int64_t)64 << 20)
#define PACK_PARALLEL_BYTES ((int64_t)1 << 20)   /* packing more than this is threaded */
#define JB_BYTES ((int64_t)1 << 20)
#define STRIP_MIN_TILE_FILL 0.75   /* ... that fill the register tiles at least this well */
#define STREAM_MAX_K_BYTES 512     /* streamed results: at most this many bytes of K each, */
#define STREAM_MIN_L2S 8           /* and at least this many L2 caches of them in all */

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
    int64_t mr, nr, npanels;  /* register tile of the dtype's GEMM; NR-wide weight panels */
    int64_t col_step;      /* t */
    int64_t rot_step;      /* m, or 0 when consecutive columns share no tap */
    int64_t rot_unit;      /* gcd(m, kw): rotations are multiples of it */
    int rotated_copies;    /* a weight copy per rotation (else one, walked by strip_runs) */
    int64_t nrot;          /* copies packed */
    int deferred;          /* I2R_PACK_DEFERRED: no panels; the GEMM packs each K block of a
                              panel from the caller's HWIO rows just before it uses it */
    int rows_only;         /* I2R_PACK_ROWS_ONLY on OIHW rows: no panels, so I2R_BLOCKED
                              runs W*X (pointwise layers may run either) */
    kernels_f32 k_f32;     /* the kernels, of the layout's dtype only */
    kernels_f64 k_f64;
} i2r_layout;

struct i2r_weights {
    i2r_layout L;
    int relu;
    void *packed;          /* [G][nrot][npanels][K][NR] */
    void *bias;            /* [G][npanels*NR], or NULL */
    int64_t packed_capacity, bias_capacity;   /* their blocks' sizes (buffer_alloc) */
    const void *rows;      /* OIHW weights in memory order, by reference: the A rows of the
                              NCHW W*X GEMM [G][OCg][K] (NULL for other layouts) */
    const void *hwio;      /* L.deferred: the caller's HWIO weights, by reference: row k
                              (= (kh, kw, c)) of group g at hwio + g*OCg + k*hwio_ld */
    int64_t hwio_ld;
    int has_panels;        /* packed holds the panels (not with I2R_PACK_ROWS_ONLY or
                              I2R_PACK_DEFERRED) */
    int rotations_ready;   /* I2R_STRIP runs with no more packing (i2r_rotations_ready) */
    int64_t packed_bytes;
};

static inline int64_t gcd64(int64_t a, int64_t b)
{
    while (b) { int64_t t = a % b; a = b; b = t; }
    return a;
}


static inline size_t dtype_size(i2r_dtype d) { return d == I2R_F64 ? sizeof(double) : sizeof(float); }


/* Byte counts saturate at SIZE_LIMIT instead of overflowing, so that the planner can report
 * a geometry too large to run (I2R_ETOOBIG) rather than compute a wrong size. Operands are
 * non-negative. */
#define SIZE_LIMIT ((int64_t)1 << 62)
static inline int64_t mul_sat(int64_t a, int64_t b)
{
    return a != 0 && b > SIZE_LIMIT / a ? SIZE_LIMIT : (a * b < SIZE_LIMIT ? a * b : SIZE_LIMIT);
}
static inline int64_t add_sat(int64_t a, int64_t b)
{
    return a >= SIZE_LIMIT - b ? SIZE_LIMIT : a + b;   /* a, b <= SIZE_LIMIT */
}
#define MUL3(a, b, c) mul_sat(mul_sat(a, b), c)
#define MUL4(a, b, c, d) mul_sat(MUL3(a, b, c), d)
#define MUL5(a, b, c, d, e) mul_sat(MUL4(a, b, c, d), e)

/* Values of one group's packed weights for one rotation. */
static inline int64_t rotation_size(const i2r_layout *L)
{
    return L->depthwise ? L->k : MUL3(L->npanels, L->k, L->nr);
}

/* Scratch is 64-byte aligned and rounded up to whole cache lines. */
static inline int64_t round_up64(int64_t bytes) { return (bytes + 63) & ~(int64_t)63; }

/* A 1x1, stride-1, unpadded convolution: a GEMM on the input's pixels, no lowering. */
static inline int is_pointwise(const i2r_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 &&
           g->pt == 0 && g->pb == 0 && g->pl == 0 && g->pr == 0;
}

/* Padded input rows [pt, min(pt + H, strip_rows)) hold input; the others are padding. */
static inline int64_t strip_input_rows(const i2r_geom *g, int64_t strip_rows)
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
    int64_t jb;                  /* NCHW: output columns transposed together; rows_out: output
                                    columns gathered before their rows are written */
    int64_t thread_bytes;        /* scratch of one thread */
    int64_t threads;
    int direct;                  /* I2R_FULL on a 1x1, stride-1, unpadded NHWC input */
    int wx;                      /* I2R_BLOCKED on NCHW (not depthwise): W * im2col panels */
    int64_t wx_panels;           /* wx: im2col panels lowered at a time */
    int blocked;                 /* I2R_BLOCKED (not depthwise): A blocks lowered in the GEMM */
    int64_t abytes, cbytes;      /* scratch parts: I2R_STRIP: the strip, the column results;
                                    I2R_FULL/BLOCKED: A (matrix or block), the NCHW result;
                                    then the NCHW input stage or slab; W*X: the panels,
                                    the staged results */
    int64_t bbytes;              /* L->deferred: a K block of the panels, packed by the
                                    GEMM (the last part of the thread's scratch) */
    int plane;                   /* I2R_STRIP, depthwise, NCHW: whole channel planes */
    int ring;                    /* I2R_STRIP, depthwise (NHWC; NCHW where depthwise_ring
                                    says): a ring of padded input rows */
    int64_t ring_rows;           /* ring: rows it holds, those one output row reads */
    int64_t ring_chunk;          /* ring on NCHW: output rows whose input and output rows
                                    are transposed at once (make_schedule) */
    int64_t plane_cols;          /* plane, ring: padded input columns the outputs read */
    int64_t plane_phase;         /* plane: values of a phase plane's row (gemm.h's q),
                                    cdiv(plane_cols, sw) */
    int64_t plane_sub_rows;      /* plane: rows of a phase plane */
    int64_t plane_block_rows;    /* plane: output rows convolved at a time */
    int64_t plane_bytes;         /* plane: the sh*sw phase planes (and the kernel's overrun) */
    int64_t plane_row;           /* ring: values of a padded row of all channels */
    int64_t col_align;           /* I2R_STRIP split by columns: parts start at multiples of
                                    this many (NCHW: a cache line of an output row) */
    int split_oc;                /* parts split the output channels (weight panels), not
                                    the work: I2R_STRIP on NCHW with a panel for every
                                    thread (else columns);
                                    I2R_FULL/BLOCKED on NHWC with one row block in all (not
                                    the rows) */
    int stream;                  /* NHWC results go straight to the output past the caches
                                    (it is too large to stay cached; see make_schedule) */
    int rows_out;                /* streamed into an output whose lines the GEMM would
                                    write in parts: the NHWC strip gathers jb columns and
                                    writes output rows, the NHWC lowered methods blocks of
                                    rows, NCHW W*X blocks of panels (cbytes; see
                                    make_schedule, wx_rows_out) */
} schedule;

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The K block of the GEMM: whole up to KC_WHOLE, else equal blocks of at most KC. */
static inline int64_t k_block(int64_t seglen)
{
    int64_t nkb = seglen <= KC_WHOLE ? 1 : cdiv(seglen, KC);
    return cdiv(seglen, nkb);
}

/* The K block of a run of len values; where A blocks are lowered or weights packed per K
 * block (into buffers of k_block(L->k) values a row), no more than that (a run of one kernel
 * row may be whole where K is not). */
static inline int64_t run_k_block(const i2r_layout *L, int64_t len, int buffered)
{
    return buffered ? min64(k_block(len), k_block(L->k)) : k_block(len);
}

/* The row stride, in values, of a lowered A matrix or block whose rows hold k values of ts
 * bytes: rows a multiple of 4 KiB apart would all fall into one set of the L1, and the MR
 * rows a register tile broadcasts from would evict each other, so such rows get one cache
 * line more. Measured (Zen 4, 1 thread, NHWC plan, 1x1 at 14x14, GFLOP/s): 1024->256 88,
 * against 115 at 1040 channels; 2048->512 at 7x7 84 against 105 at 2064. */
static inline int64_t a_row_stride(int64_t k, int64_t ts)
{
    return k * ts % 4096 ? k : k + 64 / ts;
}

/* Whether a pointwise NHWC layer's own pixels, C values apart, are such rows. */
static inline int pixels_alias(const i2r_geom *g, int64_t ts)
{
    return a_row_stride(g->c, ts) != g->c;
}

/* Deferred weights: the panels the GEMM packs and multiplies at a time, as many as keep a K
 * block of them in half the L2 (every row block reuses them from there). */
int64_t deferred_panels(const i2r_layout *L);

/* Share of the register tiles' rows a GEMM of m rows, `valid` of them kept, fills. */
static inline double tile_fill(int64_t valid, int64_t m, int64_t mr)
{
    return (double)valid / (double)(cdiv(m, mr) * mr);
}

/* A strip task: output columns at positions [p0, p1) (chain order, see position_to_chain)
 * and output channels of weight panels [pa, pb). NHWC work is split by columns; NCHW work by
 * panels, so that no two threads write into the same cache line of an NCHW output row, or
 * where there are fewer panels than threads by columns, at whole lines of the rows. */
/* The weight panels [pa, pb) part b computes: its share when the parts split the output
 * channels (split_oc), else all. */
static inline void part_panels(const schedule *s, const i2r_layout *L, int64_t b, int64_t *pa,
                               int64_t *pb)
{
    *pa = s->split_oc ? b * L->npanels / s->parts : 0;
    *pb = s->split_oc ? (b + 1) * L->npanels / s->parts : L->npanels;
}

static inline void task_range(const schedule *s, const i2r_layout *L, int64_t b, int64_t ow,
                       int64_t *p0, int64_t *p1, int64_t *pa, int64_t *pb)
{
    const int64_t a = s->col_align;
    *p0 = s->split_oc ? 0 : b * ow / s->parts / a * a;
    *p1 = s->split_oc || b + 1 == s->parts ? ow : (b + 1) * ow / s->parts / a * a;
    part_panels(s, L, b, pa, pb);
}

/* Times I2R_FULL/BLOCKED lowers each A block for panels [pa, pb): with deferred weights
 * "blocked" lowers it again for each block of deferred_panels panels (gemm_blocked). */
static inline int64_t lowering_passes(const i2r_layout *L, const schedule *s, int64_t pa,
                                      int64_t pb)
{
    return s->blocked && L->deferred ? cdiv(pb - pa, deferred_panels(L)) : 1;
}

/* Position p -> chain r and index q in the chain (column j = r + q*t). */
static inline void position_to_chain(int64_t p, int64_t ow, int64_t t, int64_t *r, int64_t *q)
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
static inline int64_t step_new_taps(const i2r_layout *L, int first, int64_t q)
{
    return (first || q == 0 || L->rot_step == 0) ? L->kw : L->rot_step;
}

/* Plane: padded columns [pl, min(pl + W, plane_cols)) hold input. */
static inline int64_t plane_input_cols(const i2r_geom *g, const schedule *s)
{
    return max64(0, min64(g->pl + g->w, s->plane_cols) - g->pl);
}

/* Input rows [*h0, *h1) that output pixels [pix0, pix1) of one image read. */
static inline void rows_read(const i2r_geom *g, int64_t pix0, int64_t pix1, int64_t *h0,
                             int64_t *h1)
{
    *h0 = max64(0, pix0 / g->ow * g->sh - g->pt);
    *h1 = min64(g->h, (pix1 - 1) / g->ow * g->sh - g->pt + (g->kh - 1) * g->dh + 1);
}

/* Ring on NCHW: input rows one chunk of ring_chunk output rows reads, at most. */
static inline int64_t ring_chunk_in_rows(const i2r_geom *g, const schedule *s)
{
    return min64(g->h, (s->ring_chunk - 1) * g->sh + (g->kh - 1) * g->dh + 1);
}

/* Ring: whether output rows [r0, r1) read padded input row p (some oh*sh + a*dh, a < KH). */
static inline int ring_reads(const i2r_geom *g, int64_t r0, int64_t r1, int64_t p)
{
    for (int64_t a = 0; a < g->kh; a++) {
        const int64_t q = p - a * g->dh;
        if (q >= r0 * g->sh && q < r1 * g->sh && q % g->sh == 0)
            return 1;
        if (q < r0 * g->sh)
            break;
    }
    return 0;
}

/* Ring: the input rows (not padding) that output rows [r0, r1) read: ring_task fills each
 * once (a row leaves the ring only after the last output row that reads it). */
static inline int64_t ring_input_rows(const i2r_geom *g, int64_t r0, int64_t r1)
{
    int64_t count = 0;
    const int64_t first = max64(r0 * g->sh, g->pt);
    const int64_t end = min64((r1 - 1) * g->sh + (g->kh - 1) * g->dh + 1, g->pt + g->h);
    for (int64_t p = first; p < end; p++)
        count += ring_reads(g, r0, r1, p);
    return count;
}

/* Ring: output rows of task part b of an image (bands of consecutive rows). */
static inline void ring_band(const schedule *s, const i2r_geom *g, int64_t b, int64_t *r0,
                             int64_t *r1)
{
    *r0 = b * g->oh / s->parts;
    *r1 = (b + 1) * g->oh / s->parts;
}

/* The work split of a weight gradient (grad_weight.template.h): groups x parts tasks, part b
 * of a group taking units [b*units/parts, (b+1)*units/parts): K panels (NHWC) or input
 * channels (NCHW). Scratch of one thread: A block, B panels, its share of dW. */
enum { GW_PB = 128 };   /* pixels of one lowered block: the GEMM's K block */
#define GW_A_BYTES ((int64_t)256 << 10)    /* NCHW: im2col rows of a task's channels, at most */
#define GW_C_BYTES ((int64_t)2 << 20)      /* NHWC: a task's share of dW and B, at most */
enum { SC_PB = 128 };   /* i2r_transpose_scatter: pixels of dy per GEMM block */
#define GW_DW_CHANNELS 256
#define GW_FEW_ROWS_TILES 8        /* NCHW: K up to this many register tiles splits panels */
#define GW_NHWC_MIN_CHANNELS 16   /* NHWC weight gradients of fewer channels per group run on
                                     NCHW copies (grad_weight_via_nchw) */
static inline int gw_via_nchw(const i2r_layout *L, const i2r_geom *g)
{
    return g->nhwc && !L->depthwise && L->cg < GW_NHWC_MIN_CHANNELS;
}                 /* depthwise NHWC: channels of a task, at most */
typedef struct {
    int64_t ntasks, parts, units, threads;
    int64_t oparts;   /* NCHW: parts of the output channels' panels (1 elsewhere) */
    int64_t abytes, bbytes, cbytes, thread_bytes;
} gw_schedule;

/* A run of K in a GEMM: A values [a, a + len) of each row times packed weight rows
 * [b, b + len). A strip row's taps sit in rotated slots; walking them as runs in tap order
 * (kh, kw, c) makes every method sum each pixel's products in the same order. */
typedef struct { int64_t a, b, len; } k_run;
/* GEMM rows [lo, hi): those a K run multiplies (strip_runs, blocked_runs: the rest read
 * padding there). */
typedef struct { int64_t lo, hi; } row_range;

/* buffers.c: 64-byte aligned blocks of at least `bytes` (NULL for 0); *capacity receives
 * the block's size, which buffer_free takes back. */
void *buffer_alloc(int64_t bytes, int64_t *capacity);
void buffer_free(void *p, int64_t capacity);

/* Runs the statement `work` once on each of `threads` threads, in one OpenMP region with
 * `clauses` (reductions; its worksharing loops are orphaned `omp for`s inside `work`), and on
 * one thread directly, with no region at all: a one-thread region between two-thread ones
 * made libgomp retire and wake its worker every call. */
#define OMP_PRAGMA(x) _Pragma(#x)
#ifdef I2R_HAVE_OPENMP
#define ON_THREADS(threads, clauses, work)                                                   \
    do {                                                                                     \
        if ((threads) > 1) {                                                                 \
            OMP_PRAGMA(omp parallel num_threads((int)(threads)) clauses)                     \
            { work; }                                                                        \
        } else {                                                                             \
            work;                                                                            \
        }                                                                                    \
    } while (0)
#else
#define ON_THREADS(threads, clauses, work) do { work; } while (0)
#endif

/* Orders this thread's streamed (non-temporal) stores before what follows. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
static inline void store_fence(void) { _mm_sfence(); }
#else
static inline void store_fence(void) {}
#endif

/* Winograd (winograd.c, winograd.template.h): weights transformed and packed for one tile
 * size, [G][(m+2)^2 positions][npanels][Cg][NR]; L is the layout of a 1x1 GEMM of Cg -> OCg
 * per group (register tile, panels, kernels). */
struct i2r_winograd {
    i2r_layout L;
    int tile, relu;
    void *packed, *bias;   /* bias: [OC] or NULL */
    int64_t packed_capacity, bias_capacity, packed_bytes;
};

/* The work split of a Winograd call: tasks of (tile block, group, output-channel part); a
 * block is tb consecutive tiles in (image, tile row, tile column) order. Thread scratch: V
 * and M of a block (all positions), a zero pixel and the dropped outputs of edge tiles, and
 * for NCHW the staged input and output of one tile-row segment (at most seg tiles). */
typedef struct {
    int64_t tile, alpha, a2;   /* m, m + 2, (m + 2)^2 */
    int64_t th, tw, tiles;     /* tile rows and columns of an image; tiles of the batch */
    int64_t tb, nblocks, parts, ntasks, threads;
    int64_t ldm;               /* values of one position in M: the panels' columns */
    int64_t vld, mld;          /* a tile's row in V (a2*Cg values) and in M (a2*ldm), padded */
    int64_t weight_bytes;      /* transformed weights of a group */
    int64_t seg;
    int64_t vbytes, mbytes, zbytes, sibytes, sobytes, thread_bytes;
} wino_schedule;
#define WINO_L3_WEIGHTS ((int64_t)8 << 20)
enum { WINO_MIN_TILES = 2, WINO_MAX_TILES = 16,   /* register tiles of rows in a block */
       WINO_STREAM_ROWS = 64,     /* rows of a block whose weights do not stay in L2 */
       WINO_L3_ROWS = 16, WINO_DRAM_ROWS = 48,   /* tile choice (winograd.c: tile_cost) */
       WINO_MIN_CHANNELS = 16 };  /* "auto" with Winograd allowed: channels per group */

/* plan.c */
int64_t l2_cache_bytes(void);
void set_kernels(i2r_layout *L, i2r_dtype dtype, i2r_isa isa);
void make_layout(i2r_layout *L, i2r_dtype dtype, i2r_isa isa, int64_t groups, int64_t kh,
                 int64_t kw, int64_t cg, int64_t ocg, int64_t sw, int64_t dw, int rotations);
void make_schedule(schedule *s, const i2r_layout *L, const i2r_geom *g, i2r_method method,
                   int nthreads);
int64_t strip_runs(const i2r_layout *L, const i2r_geom *g, int64_t rot, int64_t j,
                   k_run *runs, row_range *rows);
int strip_skips_padding_rows(const i2r_layout *L, const i2r_geom *g);
int blocked_skips_padding_rows(const i2r_layout *L, const i2r_geom *g);
int64_t blocked_runs(const i2r_layout *L, const i2r_geom *g, k_run *runs, row_range *rows);
int64_t blocked_lowered_values(const i2r_layout *L, const i2r_geom *g);
int64_t panel_bytes(const i2r_layout *L);
void packed_sizes(const i2r_layout *L, int panels, int with_bias, int64_t *pbytes,
                  int64_t *bbytes);
int geometry_matches(const i2r_layout *L, const i2r_geom *g);
void make_gw_layout(i2r_layout *L, i2r_dtype dtype, i2r_isa isa, const i2r_geom *g);
void make_gw_schedule(gw_schedule *s, const i2r_layout *L, const i2r_geom *g, int nthreads);
/* winograd.c */
void make_wino_layout(i2r_layout *L, i2r_dtype dtype, i2r_isa isa, int64_t groups, int64_t cg,
                      int64_t ocg);
void make_wino_schedule(wino_schedule *s, const i2r_layout *L, const i2r_geom *g, int tile,
                        int nthreads);

#endif
