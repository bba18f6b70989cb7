/* The planner: how weights are laid out when packed (make_layout), how a call's work is
 * split into tasks and how much scratch each thread needs (make_schedule), what a call copies
 * (count_copied) and, for i2r_predict, all of it without running anything. i2r_conv and
 * i2r_predict share these functions, so that what is predicted is what runs. */
#include "driver.h"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

/* rotations = 0 packs rotation 0 only (enough for I2R_FULL; a strip then refills all KW slots
 * at every column). Rotations are also dropped when their copies would pass
 * MAX_ROTATION_BYTES (very wide kernels: the packed size grows like KW^2). */
/* A core's L2 cache, as the OS reports it (1 MiB where it does not), read once. The L3 the
 * OS reports is not trusted: under KVM it was seen at ten times the real size. */
int64_t l2_cache_bytes(void)
{
    static int64_t bytes;
    if (!bytes) {
        int64_t found = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
        found = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        bytes = found >= (64 << 10) ? found : (int64_t)1 << 20;
    }
    return bytes;
}

/* Whether results of K products each are streamed past the caches: few products each (the
 * stores, not the FMAs, bound the call) and far too many for the caches. Measured: a 3 -> 64
 * channel 3x3 layer on a 180x320 map, 14 MiB of output, 4.0 -> 2.2 ms (NHWC); deeper layers
 * hide the stores behind their FMAs and gained nothing; a 3 MiB output lost (it would have
 * stayed in L3). */
static int writes_stream(const i2r_geom *g, int64_t k, int64_t ts)
{
    return mul_sat(k, ts) <= STREAM_MAX_K_BYTES &&
           MUL5(g->n, g->oh, g->ow, g->oc, ts) >= STREAM_MIN_L2S * l2_cache_bytes();
}

/* W*X, streamed, into NCHW planes whose sizes are not whole lines: the channel rows start
 * at different offsets in their lines, so a tile's NR pixels would stream parts of two lines
 * in every row, each part a read-modify-write. There wx_task computes a block of panels
 * into cbuf and streams each channel's row of it out whole (a partial first and last line
 * stored plainly). Measured (Zen 3, 1 thread, N=1, ms, streamed in parts -> staged):
 * 1->64 3x3 at 572x572 32.7 -> 16.5 (plain stores: 25), 3->32 3x3 at 417x417 17.7 -> 8.5,
 * 3->64 at 181x181 7.7 -> 4.3; N=8 3->32 3x3 s2 at 225x225 10.3 -> 6.0. */
static int wx_rows_out(const i2r_geom *g, int64_t k, int64_t ts)
{
    return writes_stream(g, k, ts) && MUL3(g->oh, g->ow, ts) % 64 != 0;
}

/* Share of the FMAs of NR-wide register tiles that n columns use: a last panel of at most
 * NR/2 columns costs half a panel (gemm_ukernel.template.h). */
static double panel_fill(int64_t n, int64_t nr)
{
    const int64_t tail = n % nr;
    return (double)n / (double)(n - tail + (tail == 0 ? 0 : tail <= nr / 2 ? nr / 2 : nr));
}

/* A pointwise NCHW layer: W*X or the lowered GEMM (both sum each output's C products in
 * channel order, in the same K blocks: the same bits, so the choice may look at the map's
 * size). W*X's NR-wide panels are an image's pixels (49 pixels: 49 of 64 columns), the
 * lowered GEMM's the output channels; the lowered form also transposes the input and the
 * result, ~8 products' time per value moved (fitted). Measured (Zen 4, plan, 1 thread, N=1 /
 * N=8, ms, W*X -> lowered): 960->160 at 7x7 0.19 -> 0.17 / 1.52 -> 1.16, 2048->512 at 7x7
 * 1.86 -> 1.29, 1024->512 at 13x13 20.2 -> 18.2 (N=8); W*X ahead where its panels fill or
 * few channels make the transposes dear: 240->40 at 28x28 0.18 against 0.27, 80->480 at
 * 14x14 1.32 against 1.44 (N=8), 16->96 at 112x112 0.47 against 0.72. */
static int pointwise_lowered(int64_t nr, const i2r_geom *g)
{
    const int64_t cg = g->c / g->groups, ocg = g->oc / g->groups;
    return panel_fill(g->oh * g->ow, nr) <
           panel_fill(ocg, nr) * (1.0 - 8.0 / (double)cg - 8.0 / (double)ocg);
}

enum { WX_MAX_K = 32 };   /* "auto" on NCHW: W*X for at most this many products per output */

/* I2R_BLOCKED on NCHW (not depthwise) as W * im2col (wx_task), which reads the OIHW
 * weights in place: for output channels per group that fill a quarter of a weight panel or
 * less (the lowered GEMM would fill few of its NR columns), for few products per output (K
 * at most STREAM_MAX_K_BYTES: such layers are bound by their stores, and W*X writes whole
 * output rows; the lowered form took 2.5-4x as long on the 1-3 channel stems), and for
 * pointwise layers unless pointwise_lowered says otherwise. Elsewhere the NHWC lowering from
 * a transposed copy of the input (blocked_source) is faster: its A blocks are lowered once
 * per K block, where W*X copies one short run per (channel, tap, output row). Except for
 * pointwise layers the two sum in different orders, so the rule sees the layer only: a
 * batch, or a dask chunk of an image, gets the bits of the whole. Measured (Zen 4, 1 thread,
 * N=1 unless said, ms, W*X -> lowered): 3x3 256 ch at 14x14, plan 3.07 -> 2.32 (NHWC 2.28);
 * 512 at 7x7 plan 3.37 -> 2.42, N=8 27 -> 22; 1x7 128 ch at 17x17 0.96 -> 0.66. A one-off
 * conv2d on few pixels now packs the panels: 512 at 7x7 3.4 -> 5.2, 256 at 14x14 2.9 -> 3.1
 * (its OIHW packing has since become faster: 1.5 -> 1.15 ms of that). */
static int blocked_as_wx(int64_t nr, int64_t ts, const i2r_geom *g)
{
    const int64_t cg = g->c / g->groups, ocg = g->oc / g->groups;
    if (g->nhwc || (g->groups > 1 && g->c == g->groups && g->oc == g->groups))
        return 0;   /* depthwise: the strip's planes or ring */
    if (ocg <= nr / 4)
        return 1;
    if (is_pointwise(g))
        return !pointwise_lowered(nr, g);
    return mul_sat(g->kh * g->kw * cg, ts) <= STREAM_MAX_K_BYTES;
}

/* The layout's kernel table (of its dtype only) and register tile. */
void set_kernels(i2r_layout *L, i2r_dtype dtype, i2r_isa isa)
{
    if (dtype == I2R_F64) {
        L->k_f64 = select_kernels_f64(isa);
        L->mr = L->k_f64.mr; L->nr = L->k_f64.nr;
    } else {
        L->k_f32 = select_kernels_f32(isa);
        L->mr = L->k_f32.mr; L->nr = L->k_f32.nr;
    }
}

/* The GEMM register tile (MR x NR) of a dtype at an ISA level. */
static void register_tile(i2r_dtype dtype, i2r_isa isa, int64_t *mr, int64_t *nr)
{
    i2r_layout L;
    set_kernels(&L, dtype, isa);
    *mr = L.mr;
    *nr = L.nr;
}

void make_layout(i2r_layout *L, i2r_dtype dtype, i2r_isa isa, int64_t groups,
                        int64_t kh, int64_t kw, int64_t cg, int64_t ocg, int64_t sw, int64_t dw,
                        int rotations)
{
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
    L->deferred = 0;   /* i2r_pack_weights / i2r_predict set these */
    L->rows_only = 0;
    set_kernels(L, dtype, isa);
    L->npanels = L->depthwise ? 1 : (ocg + L->nr - 1) / L->nr;
    L->col_step = dw / g0;
    L->rot_step = sw / g0;
    L->rot_unit = L->rot_step < kw ? gcd64(L->rot_step, kw) : kw;
    /* Taps that consecutive columns share sit in rotated slots. Kernels of few channels
     * get a weight copy per rotation that matches the slots as they lie (one K run per column
     * GEMM; the copies are small). Wider ones keep one copy and walk the slots in tap order
     * (strip_runs): a second K run per kernel row, but no copies to pack, and the same order
     * of sums as every other method. Depthwise kernels never run on a strip (a ring of rows
     * for NHWC, channel planes for NCHW: make_schedule): one copy, no rotations. */
    L->rotated_copies = !L->depthwise && cg < RUN_MIN_CHANNELS;
    int64_t copies_bytes = MUL4(groups, kw / L->rot_unit, rotation_size(L),
                                (int64_t)dtype_size(dtype));
    int share = !L->rotated_copies ||
                (rotations && kw / L->rot_unit <= MAX_ROTATIONS &&
                 (kw / L->rot_unit == 1 || copies_bytes <= MAX_ROTATION_BYTES));
    if (L->rot_step >= kw || !share || L->depthwise) {
        /* no tap shared: natural column order, full refills */
        L->col_step = 1;
        L->rot_step = 0;
        L->rot_unit = kw;
    }
    L->nrot = L->rotated_copies ? kw / L->rot_unit : 1;
}

/* Output rows [lo, hi) whose kernel row kh reads input rows (the others read top or bottom
 * padding through it); false if there are none. */
static int kernel_row_reach(const i2r_geom *g, int64_t kh, row_range *rr)
{
    const int64_t top = g->pt - kh * g->dh, end = g->pt + g->h - kh * g->dh;
    rr->lo = top > 0 ? min64(g->oh, cdiv(top, g->sh)) : 0;
    rr->hi = end > 0 ? min64(g->oh, cdiv(end, g->sh)) : 0;
    return rr->lo < rr->hi;
}

/* The (kernel row, output row) pairs in which the kernel row reads only top or bottom
 * padding; -1 where some output row is reached by no kernel row that reads input (it would
 * get no product at all) or the layer is depthwise (its runs must all be of one length). */
static int64_t padding_row_pairs(const i2r_layout *L, const i2r_geom *g)
{
    if (L->depthwise)
        return -1;
    int64_t covered = 0, reached = 0;   /* rows [0, covered) are reached */
    for (int64_t kh = g->kh - 1; kh >= 0; kh--) {   /* lo falls as kh grows: ascending */
        row_range r;
        if (!kernel_row_reach(g, kh, &r))
            continue;
        if (r.lo > covered)
            return -1;
        covered = max64(covered, r.hi);
        reached += r.hi - r.lo;
    }
    return covered >= g->oh ? g->kh * g->oh - reached : -1;
}

/* Whether the strip GEMM leaves out the kernel rows that read top or bottom padding: where
 * that saves at least 1/16 of the products (dilated kernels on small maps: 3x3, dilation 12,
 * at 28x28 29%, where the runs of a column were 1.40x as fast; elsewhere a run per kernel row
 * instead of one merged run cost more than the border saved: 64->64 3x3 at 56x56 0.82x). */
int strip_skips_padding_rows(const i2r_layout *L, const i2r_geom *g)
{
    const int64_t pairs = padding_row_pairs(L, g);
    return pairs >= 0 && 16 * pairs >= g->kh * g->oh;
}

/* Whether I2R_BLOCKED leaves them out (blocked_runs): its A blocks are lowered per K run,
 * so a run per kernel row costs no merged run, only a pass over C per run; from 1/32 of the
 * products (3x3 at 14x14: 1/21, at 7x7: 2/21). Measured (Zen 3, 1 thread, NHWC plan, old ->
 * new): 512->512 3x3 at 7x7 1.15x (N=8 1.07x), 256->256 at 14x14 1.05x, 512->1024 at 13x13
 * 1.06x, 7x1 192 ch at 17x17 N=8 1.13x, 5x5 64->192 at 27x27 1.05x, 64->64 at 14x14 1.00x. */
int blocked_skips_padding_rows(const i2r_layout *L, const i2r_geom *g)
{
    const int64_t pairs = padding_row_pairs(L, g);
    return pairs >= 0 && 32 * pairs >= g->kh * g->oh;
}

/* The K runs of I2R_BLOCKED where blocked_skips_padding_rows: the im2row matrix's columns of
 * each kernel row that reads input (consecutive ones that reach the same output rows merged),
 * rows[i] the output rows run i reaches. Returns their count, at most KH. */
int64_t blocked_runs(const i2r_layout *L, const i2r_geom *g, k_run *runs, row_range *rows)
{
    const int64_t row = L->kw * L->cg;
    int64_t n = 0;
    for (int64_t kh = 0; kh < L->kh; kh++) {
        row_range rr;
        if (!kernel_row_reach(g, kh, &rr))
            continue;
        if (n && runs[n - 1].a + runs[n - 1].len == kh * row && rows[n - 1].lo == rr.lo &&
            rows[n - 1].hi == rr.hi) {
            runs[n - 1].len += row;
        } else {
            rows[n] = rr;
            runs[n++] = (k_run){kh * row, kh * row, row};
        }
    }
    return n;
}

/* The values I2R_BLOCKED lowers for one image and group, once per pass (lowering_passes). */
int64_t blocked_lowered_values(const i2r_layout *L, const i2r_geom *g)
{
    if (!blocked_skips_padding_rows(L, g))
        return MUL3(g->oh, g->ow, L->k);
    return MUL3(L->kh * g->oh - padding_row_pairs(L, g), g->ow, L->kw * L->cg);
}

/* The K runs of the GEMM of strip column j, whose taps sit in slots rotated by rot (tap kw in
 * slot (kw + rot) mod KW of strip rows of KW*Cg values; kernel row kh dh strip rows down).
 * One weight copy: in tap order (kh, kw, c), per kernel row taps [0, KW - rot) from slot rot
 * on, then taps [KW - rot, KW) from slot 0. A copy per rotation (L->rotated_copies): in slot
 * order, the copy's rows in the same order. Taps that read the left or right padding are left
 * out: their slots hold zeros for the whole column (dilated kernels on small maps: up to half
 * the products). With `rows` (where strip_skips_padding_rows), so are the top and bottom ones:
 * rows[i] receives the GEMM rows (output rows) whose kernel row of run i reads input, and a
 * kernel row that reads only padding has no run (NULL: every run multiplies every row). The sum keeps its order, less
 * terms that add nothing. Runs that continue each other in A, in the weights and in rows are
 * merged (no padding, dh = 1, rot = 0: one run of K). Returns their count, at most 2*KH. */
int64_t strip_runs(const i2r_layout *L, const i2r_geom *g, int64_t rot, int64_t j,
                   k_run *runs, row_range *rows)
{
    const int64_t CG = L->cg, KW = L->kw, row = KW * CG;
    /* taps [kw_lo, kw_hi) of column j read input columns */
    const int64_t first = j * g->sw - g->pl;
    int64_t kw_lo = first >= 0 ? 0 : cdiv(-first, g->dw);
    int64_t kw_hi = first >= g->w ? 0 : min64(KW, cdiv(g->w - first, g->dw));
    if (kw_lo >= kw_hi || L->depthwise) {
        /* only padding: keep every tap, so the column is still written; depthwise products
         * (dwconv_rows) need runs of equal length */
        kw_lo = 0;
        kw_hi = KW;
    }
    int64_t n = 0;
    for (int64_t kh = 0; kh < L->kh; kh++) {
        row_range rr = {0, g->oh};
        if (rows && !kernel_row_reach(g, kh, &rr))
            continue;
        for (int64_t i = 0; i < KW; i++) {   /* i: weight position within the kernel row */
            const int64_t tap = L->rotated_copies ? (i - rot % KW + KW) % KW : i;
            const int64_t slot = L->rotated_copies ? i : (i + rot) % KW;
            if (tap < kw_lo || tap >= kw_hi)
                continue;
            const k_run r = {kh * g->dh * row + slot * CG, kh * row + i * CG, CG};
            if (n && runs[n - 1].a + runs[n - 1].len == r.a &&
                runs[n - 1].b + runs[n - 1].len == r.b &&
                (!rows || (rows[n - 1].lo == rr.lo && rows[n - 1].hi == rr.hi))) {
                runs[n - 1].len += r.len;
            } else {
                if (rows)
                    rows[n] = rr;
                runs[n++] = r;
            }
        }
    }
    return n;
}

int64_t deferred_panels(const i2r_layout *L)
{
    const int64_t panel = MUL3(k_block(L->k), L->nr, (int64_t)dtype_size(L->dtype));
    return max64(1, min64(L->npanels, l2_cache_bytes() / 2 / panel));
}

/* Depthwise I2R_STRIP: a ring of rows (below) for NHWC, and for NCHW on the narrowest maps
 * (output rows under 14 pixels; up to 16 with 25+ taps at stride 1), whose input and output
 * rows it transposes a chunk at a time; phase planes elsewhere (gemm.h). Measured (Xeon model
 * 207, 1 thread, N=1 unless said, us, ring -> plane): 3x3 576 ch at 14x14 134 -> 80, N=8
 * 1360 -> 681; 5x5 s2 672 at 14x14 692 -> 358; 5x5 240 at 28x28 249 -> 208; the ring ahead
 * on 3x3 960 at 7x7 (64 against 89), 5x5 1152 at 7x7 (137 against 184) and 5x5 480 at 14x14
 * (182 against 250), where a plane's masked row copies cost more than its full vectors save. */
static int depthwise_ring(const i2r_geom *g)
{
    return g->nhwc || g->ow < 14 || (g->ow <= 16 && g->kh * g->kw >= 25 && g->sh * g->sw == 1);
}

/* Of `parts` row chunks of `total` rows (each group's), and the counts within nthreads - 1 of
 * it, the one whose busiest thread gets the fewest rows, chunks of at most cap rows: 3 chunks
 * on 2 threads leave one thread two of them (289 rows, a 7x1 192->192 at 17x17 "blocked":
 * 1.47x the 1-thread speed as 3 chunks, 1.9x as 2). Which rows a task computes does not change
 * the sums. */
static int64_t even_parts(int64_t total, int64_t parts, int64_t groups, int64_t cap,
                          int nthreads)
{
    int64_t best = parts, busiest = cdiv(groups * parts, nthreads) * cdiv(total, parts);
    for (int64_t p = max64(1, parts - nthreads + 1); p < parts + nthreads && p <= total; p++) {
        const int64_t rows = cdiv(groups * p, nthreads) * cdiv(total, p);
        if (cdiv(total, p) <= cap && rows < busiest) {
            best = p;
            busiest = rows;
        }
    }
    return best;
}

void make_schedule(schedule *s, const i2r_layout *L, const i2r_geom *g,
                          i2r_method method, int nthreads)
{
    const int64_t ts = (int64_t)dtype_size(L->dtype);
    memset(s, 0, sizeof *s);
    /* With several threads, aim at TASKS_PER_THREAD times as many tasks as threads (taken
     * dynamically), so that a thread the OS preempts (the machine may be shared; OpenBLAS
     * threads may still be spinning) holds back only a small task. */
    int64_t want = nthreads <= 1 ? 1 : (int64_t)nthreads * TASKS_PER_THREAD;
    if (method == I2R_STRIP && L->depthwise && !depthwise_ring(g)) {
        /* Depthwise on NCHW: a channel's padded plane is small and its outputs are a direct
         * 2-D convolution of it, vectorised along the output rows; a strip of one channel
         * would feed a one-wide GEMM. Tasks are blocks of channels. */
        s->plane = 1;
        s->strip_rows = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
        s->plane_cols = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
        s->plane_phase = cdiv(s->plane_cols, g->sw);
        s->plane_sub_rows = g->oh + (g->kh - 1) * g->dh / g->sh + 1;   /* + 1: see gemm.h */
        s->plane_block_rows = max64(1, min64(g->oh, DWPLANE_BLOCK_BYTES /
                                             max64(1, s->plane_phase * ts)));
        s->plane_bytes = round_up64(add_sat(MUL5(g->sh, g->sw, s->plane_sub_rows,
                                                 s->plane_phase, ts), DWPLANE_OVERRUN_BYTES));
        s->parts = min64(want > g->n ? cdiv(want, g->n) : 1, L->cg);
        s->ntasks = g->n * s->parts;
        /* the phase planes, the block of outputs, the channel's weights, the tap offsets */
        s->thread_bytes = add_sat(add_sat(s->plane_bytes, round_up64(add_sat(MUL3(
            s->plane_block_rows, s->plane_phase, ts), DWPLANE_OVERRUN_BYTES))), add_sat(
            round_up64(MUL3(g->kh, g->kw, ts)),
            round_up64(MUL3(g->kh, g->kw, (int64_t)sizeof(size_t)))));
    } else if (method == I2R_STRIP && L->depthwise) {
        /* Depthwise: the reusable buffer turned by 90 degrees, a ring of the padded
         * input rows one output row reads (all columns and channels of each). The next output
         * row writes only its sh new input rows, into the slots of the rows that left; the
         * input is read and the output written in memory order, row by row, where a strip
         * column would gather one pixel from every input row (measured: 3x3 32 ch at
         * 112x112, N=8, 8.6 ms as a strip). Tasks are bands of output rows. */
        s->ring = 1;
        s->ring_rows = (g->kh - 1) * g->dh + 1;
        s->plane_cols = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
        s->plane_row = mul_sat(s->plane_cols, L->cg);
        /* NCHW bands transpose their input rows, the KH - sh rows they share with the next
         * band twice: one band per thread (Zen 4, 2 threads, N=1, plan: 3x3 960 ch at 7x7 as
         * 4 bands 47.5 us, as 2 39.6, 1 thread 41; 5x5 1152 ch at 7x7 77.6 -> 64.2) */
        const int64_t bands = g->nhwc ? want : nthreads;
        s->parts = max64(1, min64(bands > g->n ? cdiv(bands, g->n) : 1, g->oh));
        s->ntasks = g->n * s->parts;
        /* the ring, then the padded row each slot holds and the KH rows an output reads */
        s->thread_bytes = add_sat(round_up64(MUL3(s->ring_rows, s->plane_row, ts)),
                                  round_up64(mul_sat(add_sat(s->ring_rows, g->kh), 8)));
        if (!g->nhwc) {   /* NCHW: chunks of output rows whose in- and outputs are
                             transposed at once, in and out in half the L2 */
            const int64_t row_pair = MUL3(g->sh * g->w + g->ow, L->cg, ts);
            s->ring_chunk = max64(1, min64(cdiv(g->oh, s->parts),
                                           l2_cache_bytes() / 2 / max64(1, row_pair)));
            s->thread_bytes = add_sat(add_sat(s->thread_bytes, round_up64(MUL4(
                ring_chunk_in_rows(g, s), g->w, L->cg, ts))), round_up64(MUL4(
                s->ring_chunk, g->ow, L->cg, ts)));
        }
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
        int64_t per_unit = want > units ? cdiv(want, units) : 1;
        /* NCHW by panels where each thread gets one; with fewer (1-32 output channels, N=1:
         * ESPCN's 64->32 3x3 at 360x640 ran on one of 2 threads) by columns, at whole lines
         * of the output rows; in chain order (col_step > 1) a column range is not one */
        s->split_oc = !g->nhwc && (units * min64(per_unit, L->npanels) >= nthreads ||
                                   L->col_step > 1);
        s->col_align = g->nhwc || s->split_oc ? 1 : 64 / ts;
        s->parts = min64(per_unit, s->split_oc ? L->npanels : max64(1, g->ow / s->col_align));
        s->ntasks = units * s->parts;
        /* the strip; NCHW: jb output columns transposed into NCHW together and SB input
         * columns (of each stacked image) transposed out of NCHW together; NHWC stacks: the
         * column's results, whose valid rows are copied out */
        s->abytes = round_up64(MUL4(s->stack_rows, L->kw, L->cg, ts));
        if (!g->nhwc) {
            int64_t column = MUL3(s->gemm_rows, L->ocg, ts);
            s->jb = max64(JB_MIN, min64(JB, JB_BYTES / column / 8 * 8));
            s->cbytes = round_up64(mul_sat(s->jb, column));
        }
        else if (s->stack > 1)
            s->cbytes = round_up64(MUL3(s->gemm_rows, L->ocg, ts));
        s->thread_bytes = add_sat(s->abytes, s->cbytes);
        if (!g->nhwc)
            s->thread_bytes = add_sat(s->thread_bytes, round_up64(MUL5(
                s->stack, strip_input_rows(g, s->strip_rows), SB, L->cg, ts)));
    } else {
        /* One GEMM per image's im2row matrix; small images are stacked into GEMMs of up to
         * STACK_ROWS rows (more rows per pass over the weights); threads get chunks of at
         * least MIN_ROWS rows where there are enough. */
        int64_t total = g->n * g->oh * g->ow;
        int64_t chunk = cdiv(total, max64(1, cdiv(want, L->groups)));
        chunk = max64(chunk, min64(MIN_ROWS * L->mr, cdiv(total, nthreads)));
        const int64_t cap = min64(total, max64(g->oh * g->ow, STACK_ROWS));
        chunk = min64(chunk, cap);
        s->parts = even_parts(total, cdiv(total, chunk), L->groups, cap, nthreads);
        s->chunk = chunk = cdiv(total, s->parts);   /* equal chunks: no short last GEMM */
        s->ntasks = L->groups * s->parts;
        if (g->nhwc && !L->depthwise && total <= L->mr * MC_TILES && L->npanels > 1 &&
            want > L->groups) {
            /* one row block in all: the threads split the output channels instead, so that
             * each reads (and, deferred, packs) only its share of the weights */
            s->split_oc = 1;
            s->chunk = chunk = total;
            s->parts = min64(cdiv(want, L->groups), L->npanels);
            s->ntasks = L->groups * s->parts;
        }
        int pointwise = is_pointwise(g);
        /* "blocked" lowers a pointwise layer whose pixels alias in the L1 (a_row_stride)
         * block by block, into rows that do not */
        s->direct = pointwise && g->nhwc && !(method == I2R_BLOCKED && pixels_alias(g, ts));
        s->wx = method == I2R_BLOCKED && (L->rows_only || blocked_as_wx(L->nr, ts, g));
        s->blocked = method == I2R_BLOCKED && !L->depthwise && !s->wx &&
                     (!pointwise || (g->nhwc && !s->direct));
        if (s->wx) {             /* im2col panels, as many as half the L2 holds ... */
            const int64_t panel = MUL3(L->k, L->nr, ts);
            /* ... with their results if those are staged (wx_rows_out) */
            const int64_t staged = wx_rows_out(g, L->k, ts) ? MUL3(L->ocg, L->nr, ts) : 0;
            s->wx_panels = max64(1, min64(cdiv(chunk, L->nr),
                                          l2_cache_bytes() / 2 / add_sat(panel, staged)));
            s->abytes = round_up64(mul_sat(s->wx_panels, panel));
            s->cbytes = round_up64(mul_sat(s->wx_panels, staged));
            const int64_t ablock = MUL4(L->mr, MC_TILES, a_row_stride(k_block(L->k), ts), ts);
            if (a_row_stride(L->k, ts) != L->k)   /* ... and a copy of an A block (wx_task) */
                s->abytes = add_sat(s->abytes, round_up64(ablock));
        } else if (s->blocked)   /* one A block: MC rows of a K block */
            s->abytes = round_up64(MUL4(L->mr, MC_TILES, a_row_stride(k_block(L->k), ts), ts));
        else if (!s->direct)     /* the chunk's whole im2row matrix */
            s->abytes = round_up64(MUL3(chunk, a_row_stride(L->k, ts), ts));
        s->thread_bytes = s->abytes;
        if (L->deferred && !s->wx)
            s->bbytes = round_up64(MUL4(deferred_panels(L), k_block(L->k), L->nr, ts));
        if (!g->nhwc && !s->wx) {
            /* the GEMM result before its transpose into NCHW, and the input rows transposed
             * out of NCHW: blocked, every image the chunk touches; else at most one image */
            int64_t images = s->blocked ? min64(g->n, cdiv(chunk, g->oh * g->ow) + 1) : 1;
            s->cbytes = round_up64(MUL3(chunk, L->ocg, ts));
            s->thread_bytes = add_sat(add_sat(s->thread_bytes, s->cbytes),
                                      round_up64(MUL5(images, g->h, g->w, L->cg, ts)));
        }
        s->thread_bytes = add_sat(s->thread_bytes, s->bbytes);
    }
    s->stream = (g->nhwc || s->wx) && writes_stream(g, L->k, ts);
    if (s->wx && s->stream && wx_rows_out(g, L->k, ts)) {
        s->rows_out = 1;
        s->thread_bytes = add_sat(s->thread_bytes, s->cbytes);
    }
    if (method == I2R_STRIP && !L->depthwise && g->nhwc && s->stream && s->stack == 1 &&
        L->col_step == 1 && L->groups == 1) {
        /* A streamed NHWC column writes each pixel's OC values one image row apart. Into
         * an output that is not 64-byte aligned (NumPy's arrays are 16), or of pixels that
         * are not whole lines, its lines reach memory in parts, each a read-modify-write:
         * there (strip_task) jb columns are gathered in L2 and written as rows of jb pixels,
         * whole lines streamed. The room is kept either way (the workspace does not depend
         * on where the output lies). Measured (Zen 4, 1 thread, ms, straight -> gathered),
         * 16-byte-aligned output: 3->64 3x3 at 180x320 5.3 -> 3.4, 1->64 3x3 at 572x572
         * 21.5 -> 9.4, 3->32 3x3 at 416x416 7.0 -> 5.0; 64-byte-aligned, straight: 2.9, 6.3,
         * 3.9 (gathered there: 1.1-1.4x the time, so not used). */
        const int64_t column = MUL3(g->oh, L->ocg, ts);
        s->rows_out = 1;
        s->jb = max64(ROWS_JB_MIN, min64(JB, l2_cache_bytes() / 2 / column));
        s->cbytes = round_up64(mul_sat(s->jb, column));
        s->thread_bytes = add_sat(s->thread_bytes, s->cbytes);
    } else if (method != I2R_STRIP && g->nhwc && s->stream && L->groups == 1 &&
               !s->split_oc && !L->deferred) {
        /* The lowered methods' rows are consecutive pixels, but a register tile covers NR of
         * their OC values: into an unaligned output its lines are streamed in parts too.
         * There (full_task) each block of MC rows is computed into cbuf and copied out as
         * one run. Measured (Zen 4, N=8, 16-byte-aligned out=, ms, straight -> gathered; 1
         * thread): 1x1 64->256 at 56x56 12.3 -> 9.7, 24->144 at 56x56 5.5 -> 2.9, 16->96 at
         * 112x112 10.1 -> 4.8 (aligned: 9.1, 2.6, 3.5); 2 threads: 6.9 -> 5.9, 6.2 -> 3.0. */
        s->rows_out = 1;
        s->cbytes = round_up64(MUL3(L->mr, MC_TILES, mul_sat(L->ocg, ts)));
        s->thread_bytes = add_sat(s->thread_bytes, s->cbytes);
    }
    s->threads = min64(nthreads, s->ntasks);
#ifndef I2R_HAVE_OPENMP
    s->threads = 1;
#endif
    if (s->threads < 1)
        s->threads = 1;
}

static int64_t count_copied(const i2r_layout *L, const i2r_geom *g, i2r_method method,
                            const schedule *s)
{
    int64_t per_image = 0;
    if (method != I2R_STRIP) {   /* split_oc: every part lowers all the rows */
        int64_t passes = 0;
        for (int64_t b = 0; b < (s->split_oc ? s->parts : 1); b++) {
            int64_t pa, pb;
            part_panels(s, L, b, &pa, &pb);
            passes += lowering_passes(L, s, pa, pb);
        }
        if (s->direct)
            return 0;
        return MUL4(g->n, L->groups, s->blocked ? blocked_lowered_values(L, g)
                                                : MUL3(g->oh, g->ow, L->k), passes);
    }
    if (s->plane)
        return MUL4(g->n, L->cg, strip_input_rows(g, s->strip_rows), plane_input_cols(g, s));
    if (s->ring) {
        int64_t rows = 0, r0, r1;
        for (int64_t b = 0; b < s->parts; b++) {
            ring_band(s, g, b, &r0, &r1);
            rows += ring_input_rows(g, r0, r1);
        }
        return MUL4(g->n, rows, plane_input_cols(g, s), L->cg);
    }
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
    return MUL5(g->n, L->groups, per_image, strip_input_rows(g, s->strip_rows), L->cg);
}


/* Bytes of the packed panels (every rotation). */
int64_t panel_bytes(const i2r_layout *L)
{
    return MUL4(L->groups, L->nrot, rotation_size(L), (int64_t)dtype_size(L->dtype));
}

/* Bytes of the packed weights (the panels, if packed) and of the padded bias. */
void packed_sizes(const i2r_layout *L, int panels, int with_bias, int64_t *pbytes,
                  int64_t *bbytes)
{
    int64_t ts = (int64_t)dtype_size(L->dtype);
    int64_t bias_width = L->depthwise ? L->ocg : L->npanels * L->nr;
    *pbytes = panels ? panel_bytes(L) : 0;
    *bbytes = with_bias ? MUL3(L->groups, bias_width, ts) : 0;
}

int geometry_matches(const i2r_layout *L, const i2r_geom *g)
{
    return g->groups == L->conv_groups && g->kh == L->kh && g->kw == L->kw &&
           g->c == L->cg * L->groups && g->oc == L->ocg * L->groups && g->sw == L->sw &&
           g->dw == L->dw && g->n > 0 && g->h > 0 && g->w > 0 && g->oh > 0 && g->ow > 0 &&
           L->cg > 0 && L->ocg > 0 && g->ow0 >= 0;
}

/* The weight gradient's layout: the GEMM of one convolution group (its A and B roles are
 * the gradient's, see grad_weight.template.h), or depthwise: one task group of C channels. */
void make_gw_layout(i2r_layout *L, i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
{
    memset(L, 0, sizeof *L);
    L->dtype = dtype; L->isa = isa;
    L->groups = L->conv_groups = g->groups;
    L->kh = g->kh; L->kw = g->kw; L->sw = g->sw; L->dw = g->dw;
    L->cg = g->c / g->groups; L->ocg = g->oc / g->groups;
    L->k = L->kh * L->kw * L->cg;
    set_kernels(L, dtype, isa);
    L->npanels = cdiv(L->ocg, L->nr);
    L->depthwise = g->groups > 1 && L->cg == 1 && L->ocg == 1;
    if (L->depthwise)
        L->groups = 1;
}

/* Tasks: at least TASKS_PER_THREAD per thread where the group's units allow, and small enough
 * that a task's im2col rows (NCHW) or share of dW (NHWC) stay under GW_A_BYTES / GW_C_BYTES. */
void make_gw_schedule(gw_schedule *s, const i2r_layout *L, const i2r_geom *g, int nthreads)
{
    const int64_t size = (int64_t)dtype_size(L->dtype), taps = g->kh * g->kw;
    const int64_t want = nthreads <= 1 ? 1 : (int64_t)nthreads * TASKS_PER_THREAD;
    int64_t per_unit, cap;
    s->oparts = 1;
    if (L->depthwise) {   /* channels; NHWC: a row's and the total's sums of a task's */
        s->units = g->c;
        /* NHWC: every task reads all of x and dy, so as few as there are threads */
        s->parts = min64(s->units, max64(g->nhwc ? nthreads : want,
                                         cdiv(g->c, GW_DW_CHANNELS)));
        s->ntasks = s->parts;
        s->threads = max64(1, min64(nthreads, s->ntasks));
        s->abytes = s->bbytes = 0;
        s->cbytes = round_up64(g->nhwc ? MUL4(2, taps, cdiv(g->c, s->parts), size)
                                       : mul_sat(g->ow, size));
        s->thread_bytes = s->cbytes;
        return;
    }
    s->units = g->nhwc ? cdiv(L->k, L->nr) : L->cg;
    if (g->nhwc) {   /* dW columns and B panel of one K panel */
        per_unit = mul_sat(add_sat(L->ocg, GW_PB), L->nr * size);
        cap = GW_C_BYTES;
    } else {
        per_unit = MUL3(taps, GW_PB, size);        /* im2col rows of one channel */
        cap = GW_A_BYTES;
    }
    s->parts = min64(s->units, max64(cdiv(want, L->groups),
                                     cdiv(s->units, max64(1, cap / max64(per_unit, 1)))));
    if (!g->nhwc && L->npanels > 1 && L->k <= GW_FEW_ROWS_TILES * L->mr) {
        /* few im2col rows: one channel part, the output panels split among the tasks */
        s->parts = 1;
        s->oparts = min64(L->npanels, cdiv(want, L->groups));
    }
    s->ntasks = MUL3(L->groups, s->parts, s->oparts);
    s->threads = max64(1, min64(nthreads, s->ntasks));
    const int64_t per_task = cdiv(s->units, s->parts);
    if (g->nhwc) {
        s->abytes = round_up64(MUL3(L->ocg, GW_PB, size));
        s->bbytes = round_up64(MUL4(per_task, GW_PB, L->nr, size));
        s->cbytes = round_up64(MUL4(per_task, L->ocg, L->nr, size));
    } else {
        s->abytes = round_up64(mul_sat(per_task, per_unit));
        s->bbytes = round_up64(MUL4(L->npanels, GW_PB, L->nr, size));
        s->cbytes = round_up64(MUL4(per_task, taps, L->ocg, size));
    }
    s->thread_bytes = add_sat(add_sat(s->abytes, s->bbytes), s->cbytes);
}

i2r_status i2r_predict_grad_weight(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g,
                                   int nthreads, i2r_stats *stats)
{
    i2r_layout L;
    gw_schedule s;
    make_gw_layout(&L, dtype, isa, g);
    make_gw_schedule(&s, &L, g, nthreads);
    memset(stats, 0, sizeof *stats);
    stats->threads = s.threads;
    stats->workspace_bytes = mul_sat(s.threads, s.thread_bytes);
    if (gw_via_nchw(&L, g)) {   /* NCHW copies of x and dy, the OIHW result; their tasks */
        i2r_geom gn = *g;
        gn.nhwc = 0;
        make_gw_schedule(&s, &L, &gn, nthreads);
        const int64_t size = (int64_t)dtype_size(dtype);
        stats->threads = s.threads;
        stats->workspace_bytes = add_sat(mul_sat(s.threads, s.thread_bytes), mul_sat(size,
            add_sat(add_sat(MUL4(g->n, g->c, g->h, g->w), MUL4(g->n, g->oc, g->oh, g->ow)),
                    mul_sat(g->oc, L.k))));
    }
    stats->copied_values = MUL4(g->n, g->oh * g->ow, L.k, L.groups);
    return stats->workspace_bytes >= SIZE_LIMIT ? I2R_ETOOBIG : I2R_OK;
}

i2r_status i2r_predict(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, i2r_method method,
                       int nthreads, int pack_flags, int with_bias, i2r_stats *stats)
{
    i2r_layout L;
    schedule s;
    int64_t pbytes, bbytes;
    if (g->groups < 1 || g->c % g->groups || g->oc % g->groups || nthreads < 1)
        return I2R_EINVAL;
    make_layout(&L, dtype, isa, g->groups, g->kh, g->kw, g->c / g->groups, g->oc / g->groups,
                g->sw, g->dw, (pack_flags & I2R_PACK_ROTATIONS) != 0);
    if (!geometry_matches(&L, g))
        return I2R_EINVAL;
    L.deferred = (pack_flags & I2R_PACK_DEFERRED) && g->nhwc && !L.depthwise;
    L.rows_only = (pack_flags & I2R_PACK_ROWS_ONLY) && !g->nhwc && !L.depthwise;
    make_schedule(&s, &L, g, method, nthreads);
    packed_sizes(&L, !L.deferred && !L.rows_only, with_bias, &pbytes, &bbytes);
    stats->threads = s.threads;
    stats->workspace_bytes = mul_sat(s.threads, s.thread_bytes);
    stats->copied_values = count_copied(&L, g, method, &s);
    stats->packed_bytes = add_sat(round_up64(pbytes), round_up64(bbytes));
    if (stats->workspace_bytes >= SIZE_LIMIT || stats->packed_bytes >= SIZE_LIMIT ||
        mul_sat(stats->copied_values, (int64_t)dtype_size(dtype)) >= SIZE_LIMIT)
        return I2R_ETOOBIG;
    return I2R_OK;
}


/* A one-off call on NHWC packs as it goes (I2R_PACK_DEFERRED) when the batch has at most
 * DEFERRED_ROW_BLOCKS row blocks of pixels: each K block of the panels is packed into the
 * L2 (prefetched while the block before is multiplied) and used there by every row block,
 * so the weights pass through memory once instead of three times (read, write the panels,
 * read them again), and the traffic overlaps the FMAs. With more rows the packing is
 * amortised, and every row chunk (task) would pack its own. Measured (EPYC Zen 5, N=1,
 * interleaved, deferred / pack-then-run): 1 thread 512->512 3x3 at 7x7 0.90, 512->2048 1x1
 * 0.92, 512->512 3x3 at 14x14 0.94, 128->128 3x3 at 28x28 1.04; 2 threads 0.75-1.00 at 7x7
 * and 14x14, 1.07 at 28x28; 1024->1024 3x3 at 7x7 (38 MB of weights) 1.01-1.03. */
int i2r_pack_flags(i2r_dtype dtype, i2r_isa isa, i2r_method method, const i2r_geom *g)
{
    int64_t mr, nr;
    register_tile(dtype, isa, &mr, &nr);
    int depthwise = g->groups > 1 && g->c == g->groups && g->oc == g->groups;
    if (method == I2R_STRIP)
        return I2R_PACK_ROTATIONS;
    if (!g->nhwc)   /* one-off pointwise calls: W*X, whose weights need no packing */
        return method == I2R_BLOCKED && (is_pointwise(g) ||
                                         blocked_as_wx(nr, (int64_t)dtype_size(dtype), g))
            ? I2R_PACK_ROWS_ONLY : 0;
    return !depthwise && g->n * g->oh * g->ow <= mr * MC_TILES * DEFERRED_ROW_BLOCKS
        ? I2R_PACK_DEFERRED : 0;
}

int i2r_one_sum_order(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
{
    i2r_layout L;
    if (g->groups < 1 || g->c % g->groups || g->oc % g->groups || !g->nhwc)
        return 0;
    make_layout(&L, dtype, isa, g->groups, g->kh, g->kw, g->c / g->groups, g->oc / g->groups,
                g->sw, g->dw, 1);
    return !L.rotated_copies && !L.depthwise;   /* depthwise: the ring is always chosen */
}

/* "auto": the strip when its column GEMMs are long and fill the register tiles (OH rows
 * each); else the im2row matrix lowered block by block (short columns would leave the tiles
 * half empty and stream every weight once per column), and always for pointwise layers,
 * which are a GEMM on the input itself. */
i2r_method i2r_choose_method(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
{
    int64_t mr, nr;
    register_tile(dtype, isa, &mr, &nr);
    const int64_t ts = (int64_t)dtype_size(dtype);
    int depthwise = g->groups > 1 && g->c == g->groups && g->oc == g->groups;
    if (is_pointwise(g))
        return I2R_BLOCKED;
    /* Depthwise: I2R_STRIP (a ring of rows or channel planes, make_schedule) on every map
     * size. I2R_BLOCKED lowers a depthwise layer as the whole im2row matrix (no GEMM blocks
     * to lower into), KH*KW times the input. Measured, 1 thread, N=8: 5x5 1152 ch at 7x7 NHWC
     * 6.4 -> 0.59 ms, NCHW 11.7 -> 1.5 ms; 3x3 s2 576 ch at 14x14 NCHW 1.86 -> 0.89 ms. */
    if (depthwise)
        return I2R_STRIP;
    /* NCHW bound by its stores, or with at most WX_MAX_K products per output (the 1-3
     * channel stems): W*X (blocked_as_wx), which writes whole output rows, where the strip
     * gathers and transposes its columns. Measured (Zen 4, 1 thread, N=1, ms, strip -> W*X):
     * 3->32 3x3 s2 at 224x224 0.55 -> 0.41 (not streamed), 3->32 3x3 at 416x416 10.4 -> 4.5
     * and 3->64 at 180x320 5.6 -> 2.6 (streamed); strip ahead from 8 channels on (8->32 3x3 at
     * 112x112 0.73 against 0.79). */
    const int64_t k = g->kh * g->kw * (g->c / g->groups);
    if (!g->nhwc && (writes_stream(g, k, ts) || k <= WX_MAX_K))
        return I2R_BLOCKED;
    /* NCHW with few output channels per group (a quarter of a weight panel or less: the
     * strip's GEMM would fill few of the NR columns): W*X, whose rows are the channels and
     * whose NR columns are pixels. Measured (N=8, 1 thread): 64->3 2x2 at 32x32 2.0 -> 1.4 ms,
     * 64->3 7x7 at 224x224 809 -> 615 ms. */
    if (!g->nhwc && !depthwise && g->oc / g->groups <= nr / 4)
        return I2R_BLOCKED;
    return g->oh >= STRIP_MIN_ROWS && tile_fill(g->oh, g->oh, mr) >= STRIP_MIN_TILE_FILL
        ? I2R_STRIP : I2R_BLOCKED;
}

/* Whether the input gradient / transposed convolution runs in scatter form
 * (i2r_transpose_scatter) rather than as the phase split of forward convolutions. */
int i2r_transpose_scatter_preferred(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
{
    int64_t mr, nr;
    register_tile(dtype, isa, &mr, &nr);
    const int64_t cg = g->c / g->groups;
    const int depthwise = g->groups > 1 && cg == 1 && g->oc == g->groups;
    /* the phase split's GEMMs have cg columns: a quarter of a panel or less fills badly.
     * NHWC depthwise with stride > 1: the phase split would run s*s convolutions of 1-4 taps
     * each; one pass adding each tap's products in place is faster (3x3 s2 144 ch, 28x28 ->
     * 56x56, N=8, 1 thread: 5.1 -> 1.9 ms); at stride 1 the forward's strip is (4.8 against
     * 9.7 ms at 56x56). g->nhwc: the caller's layout. */
    if (depthwise)
        return g->nhwc && (g->sh > 1 || g->sw > 1);
    return cg <= nr / 4;
}
