/* The executor: per-thread scratch and the task loop of one call. Included by conv.c per dtype (T and SFX defined; see driver.h). */
/* Fresh thread scratch: zero the strip's padding rows (never written later); with debug_nan
 * fill everything else with NaN so a read of a slot or row not yet written shows. */
static void FN(init_scratch)(const i2r_layout *L, const i2r_geom *g, const schedule *s,
                             i2r_method method, int debug_nan, T *scratch)
{
    int64_t n = s->thread_bytes / (int64_t)sizeof(T);
    if (debug_nan)
        for (int64_t i = 0; i < n; i++)
            scratch[i] = (T)NAN;
    if (s->plane) {   /* zero the planes: the rows and columns that hold no input stay so */
        memset(scratch, 0, (size_t)s->plane_bytes);
    } else if (s->ring) {   /* each ring row's padding columns */
        const int64_t C = L->cg, left = min64(g->pl, s->plane_cols);
        const int64_t right = left + plane_input_cols(g, s);
        for (int64_t r = 0; r < s->ring_rows; r++) {
            T *row = scratch + r * s->plane_row;
            memset(row, 0, (size_t)(left * C) * sizeof(T));
            memset(row + right * C, 0, (size_t)((s->plane_cols - right) * C) * sizeof(T));
        }
    } else if (method == I2R_STRIP) {   /* each stacked image's padding rows */
        int64_t row = L->kw * L->cg, in_rows = strip_input_rows(g, s->strip_rows);
        int64_t top = min64(g->pt, s->strip_rows);
        for (int64_t b = 0; b < s->stack; b++) {
            T *block = scratch + b * s->block_rows * row;
            int64_t end = b + 1 < s->stack ? s->block_rows : s->strip_rows;
            memset(block, 0, (size_t)(top * row) * sizeof(T));
            memset(block + (top + in_rows) * row, 0,
                   (size_t)((end - top - in_rows) * row) * sizeof(T));
        }
    }
}

/* One thread's share of a call: its scratch, then tasks taken dynamically (the loop is the
 * enclosing parallel region's, or the whole of it on one thread). Returns the values it
 * copied; sets *failed when its scratch could not be had. */
static int64_t FN(thread_work)(const struct i2r_weights *w, const i2r_geom *g,
                               const schedule *sp, i2r_method method, int debug_nan,
                               const T *x, T *y, int *failed)
{
    const i2r_layout *L = &w->L;
    const schedule s = *sp;
    const int64_t x_image = g->c * g->h * g->w, y_image = g->oc * g->oh * g->ow;
    const int64_t abytes = s.abytes, cbytes = s.cbytes;
    int64_t copied = 0;
        int64_t capacity;
        T *scratch = (T *)buffer_alloc(s.thread_bytes, &capacity);
        /* strip_runs, blocked_runs: 2*KH K runs, then their GEMM rows */
        k_run *runs = malloc((size_t)(2 * g->kh) * (sizeof(k_run) + sizeof(row_range)));
        row_range *run_rows = runs ? (row_range *)(runs + 2 * g->kh) : NULL;
        if ((s.thread_bytes && !scratch) || !runs)
            *failed = 1;
        else
            FN(init_scratch)(L, g, &s, method, debug_nan, scratch);
#ifdef I2R_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t task = 0; task < s.ntasks; task++) {
            if (*failed)
                continue;
            int64_t b = task % s.parts;
            if (s.plane) {
                int64_t n = task / s.parts;
                copied += FN(plane_task)(w, g, &s, x + n * x_image, y + n * y_image,
                                         b * L->cg / s.parts, (b + 1) * L->cg / s.parts,
                                         scratch);
            } else if (s.ring) {
                int64_t n = task / s.parts, r0, r1;
                ring_band(&s, g, b, &r0, &r1);
                copied += FN(ring_task)(w, g, &s, x + n * x_image, y + n * y_image, r0, r1,
                                        scratch);
            } else if (method == I2R_STRIP) {
                int64_t unit = task / s.parts, group = unit % L->groups;
                int64_t n0 = unit / L->groups * s.stack, p0, p1, pa, pb;
                task_range(&s, L, b, g->ow, &p0, &p1, &pa, &pb);
                if (p0 < p1)
                    copied += FN(strip_task)(w, g, &s, x, y, group, n0,
                                             min64(s.stack, g->n - n0), p0, p1, pa, pb,
                                             scratch, scratch + abytes / (int64_t)sizeof(T),
                                             scratch + (abytes + cbytes) / (int64_t)sizeof(T),
                                             runs, run_rows);
            } else if (s.wx) {
                int64_t group = task / s.parts, p0 = b * s.chunk;
                int64_t p1 = min64(p0 + s.chunk, g->n * g->oh * g->ow);
                copied += FN(wx_task)(w, g, &s, x, y, group, p0, p1, scratch,
                                      scratch + abytes / (int64_t)sizeof(T));
            } else {
                int64_t group = task / s.parts, p0 = s.split_oc ? 0 : b * s.chunk, pa, pb;
                int64_t p1 = min64(p0 + s.chunk, g->n * g->oh * g->ow);
                part_panels(&s, L, b, &pa, &pb);
                copied += FN(full_task)(w, g, &s, x, y, group, p0, p1, pa, pb, scratch,
                                        scratch + abytes / (int64_t)sizeof(T),
                                        scratch + (abytes + cbytes) / (int64_t)sizeof(T),
                                        s.bbytes ? scratch + (s.thread_bytes - s.bbytes) /
                                                             (int64_t)sizeof(T) : NULL,
                                        runs, run_rows);
            }
        }
        store_fence();   /* before the barrier: the results are read after it */
        buffer_free(scratch, capacity);
        free(runs);
    return copied;
}

static i2r_status FN(conv)(const struct i2r_weights *w, const i2r_geom *g, i2r_method method,
                           int nthreads, int flags, const void *xv, void *yv,
                           i2r_stats *stats)
{
    const T *x = (const T *)xv;
    T *y = (T *)yv;
    const int debug_nan = (flags & I2R_RUN_DEBUG_NAN) != 0;
    schedule s;
    make_schedule(&s, &w->L, g, method, nthreads);
    if (flags & I2R_RUN_PLAIN_STORES)   /* the room streaming needs stays: same workspace */
        s.stream = s.rows_out = 0;
    /* packed without what this needs (deferred weights: the strip would repack them for
     * every column) */
    if (s.wx ? !w->rows : !w->has_panels && !(w->L.deferred && method != I2R_STRIP))
        return I2R_EINVAL;
    if (s.thread_bytes >= SIZE_LIMIT)   /* i2r_predict says so first */
        return I2R_ETOOBIG;
    int64_t copied = 0;
    int failed = 0;
    ON_THREADS(s.threads, reduction(+ : copied) reduction(| : failed),
               copied += FN(thread_work)(w, g, &s, method, debug_nan, x, y, &failed));
    if (stats) {
        stats->threads = s.threads;
        stats->workspace_bytes = s.threads * s.thread_bytes;
        stats->copied_values = copied;
        stats->packed_bytes = w->packed_bytes;
    }
    return failed ? I2R_ENOMEM : I2R_OK;
}
