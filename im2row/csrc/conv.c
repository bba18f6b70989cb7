/* The executor (i2r_conv): runs a call's tasks (see plan.c for how they are cut) with the
 * per-dtype loops of the *.template.h files, instantiated here for float and double. */
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
#undef T
#undef SFX

#define T double
#define SFX f64
#include "kernels.template.h"
#include "lowered.template.h"
#include "strip.template.h"
#include "depthwise.template.h"
#include "execute.template.h"
#undef T
#undef SFX

i2r_status i2r_conv(const i2r_weights *w, const i2r_geom *g, i2r_method method, int nthreads,
                    int debug_nan, const void *x, void *y, i2r_stats *stats)
{
    if (!geometry_matches(&w->L, g) || nthreads < 1)
        return I2R_EINVAL;
    if (w->L.dtype == I2R_F64)
        return conv_f64(w, g, method, nthreads, debug_nan, x, y, stats);
    return conv_f32(w, g, method, nthreads, debug_nan, x, y, stats);
}
