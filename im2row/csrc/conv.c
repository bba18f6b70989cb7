/* The executors (i2r_conv, i2r_grad_weight, i2r_transpose_scatter, i2r_winograd_conv): run a call's tasks (see plan.c for how they are
 * cut) with the per-dtype loops of the *.template.h files, instantiated here for float and
 * double. */
#include "driver.h"

#ifdef I2R_HAVE_OPENMP
#include <omp.h>
#endif

#define T float
#define SFX f32
#include "kernels.template.h"
#include "lowered.template.h"
#include "strip.template.h"
#include "depthwise.template.h"
#include "execute.template.h"
#include "grad_weight.template.h"
#include "scatter.template.h"
#include "winograd.template.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "kernels.template.h"
#include "lowered.template.h"
#include "strip.template.h"
#include "depthwise.template.h"
#include "execute.template.h"
#include "grad_weight.template.h"
#include "scatter.template.h"
#include "winograd.template.h"
#undef T
#undef SFX

i2r_status i2r_conv(const i2r_weights *w, const i2r_geom *g, i2r_method method, int nthreads,
                    int flags, const void *x, void *y, i2r_stats *stats)
{
    if (!geometry_matches(&w->L, g) || nthreads < 1)
        return I2R_EINVAL;
    if (w->L.dtype == I2R_F64)
        return conv_f64(w, g, method, nthreads, flags, x, y, stats);
    return conv_f32(w, g, method, nthreads, flags, x, y, stats);
}

int i2r_streams_results(const i2r_weights *w, const i2r_geom *g, i2r_method method,
                        int nthreads)
{
    schedule s;
    if (!geometry_matches(&w->L, g) || nthreads < 1)
        return 0;
    make_schedule(&s, &w->L, g, method, nthreads);
    return s.stream;
}

i2r_status i2r_grad_weight(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int nthreads,
                           const void *x, const void *dy, void *dw, i2r_stats *stats)
{
    i2r_layout L;
    gw_schedule s;
    i2r_status st = i2r_predict_grad_weight(dtype, isa, g, nthreads, stats);
    if (st != I2R_OK || nthreads < 1)
        return st != I2R_OK ? st : I2R_EINVAL;
    make_gw_layout(&L, dtype, isa, g);
    make_gw_schedule(&s, &L, g, nthreads);
    if (g->n * g->oh * g->ow == 0) {   /* no pixel: the gradient is zero */
        memset(dw, 0, (size_t)(g->oc * L.k) * dtype_size(dtype));
        return I2R_OK;
    }
    if (gw_via_nchw(&L, g))
        return dtype == I2R_F64 ? grad_weight_via_nchw_f64(&L, g, nthreads, x, dy, dw)
                                : grad_weight_via_nchw_f32(&L, g, nthreads, x, dy, dw);
    if (dtype == I2R_F64)
        return grad_weight_f64(&L, g, &s, x, dy, dw);
    return grad_weight_f32(&L, g, &s, x, dy, dw);
}

i2r_status i2r_transpose_scatter(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int nthreads,
                                 const void *dy, const void *w, void *dx)
{
    i2r_layout L;
    if (!g->nhwc || nthreads < 1)
        return I2R_EINVAL;
    make_gw_layout(&L, dtype, isa, g);
    L.groups = g->groups;   /* a GEMM per group (depthwise: L.depthwise, no GEMM) */
    if (dtype == I2R_F64)
        return transpose_scatter_f64(&L, g, nthreads, dy, w, dx);
    return transpose_scatter_f32(&L, g, nthreads, dy, w, dx);
}

i2r_status i2r_winograd_conv(const i2r_winograd *w, const i2r_geom *g, int nthreads,
                             int debug_nan, const void *x, void *y, i2r_stats *stats)
{
    const i2r_layout *L = &w->L;
    if (!i2r_winograd_tile(L->dtype, L->isa, g) || g->groups != L->groups || g->c != L->groups * L->cg ||
        g->oc != L->groups * L->ocg || nthreads < 1)
        return I2R_EINVAL;
    if (L->dtype == I2R_F64)
        return winograd_f64(w, g, nthreads, debug_nan, x, y, stats);
    return winograd_f32(w, g, nthreads, debug_nan, x, y, stats);
}
