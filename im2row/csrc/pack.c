/* Weight packing (i2r_pack_weights): the caller's weights, read in place through their
 * strides, into the NR-wide panels the GEMM microkernels read (pack.template.h). */
#include "driver.h"

#define T float
#define SFX f32
#include "pack.template.h"
#undef T
#undef SFX

#define T double
#define SFX f64
#include "pack.template.h"
#undef T
#undef SFX

i2r_status i2r_pack_weights(i2r_dtype dtype, i2r_isa isa, const void *wm,
                            const int64_t wstride[5], const void *bias,
                            int64_t groups, int64_t kh, int64_t kw, int64_t cg, int64_t ocg,
                            int64_t sw, int64_t dw, int flags, int relu, int nthreads,
                            i2r_weights **out)
{
    i2r_weights *w = calloc(1, sizeof *w);
    int64_t pbytes, bbytes;
    *out = NULL;
    if (!w)
        return I2R_ENOMEM;
    make_layout(&w->L, dtype, isa, groups, kh, kw, cg, ocg, sw, dw,
                (flags & I2R_PACK_ROTATIONS) != 0);
    /* OIHW weights in memory order are already the A rows of the NCHW W*X GEMM, and HWIO
     * ones those of deferred packing: kept by reference (the caller keeps them alive and
     * unchanged while w lives) */
    const int64_t K = w->L.k;
    const int rows = !w->L.depthwise && wstride[2] == 1 && wstride[1] == kw &&
                     wstride[3] == kh * kw && wstride[4] == K && wstride[0] == ocg * K;
    /* HWIO weights whose (kh, kw, c) rows lie evenly spaced: packed by the GEMM if asked */
    const int hwio = !w->L.depthwise && wstride[4] == 1 && wstride[2] == cg * wstride[3] &&
                     wstride[1] == kw * wstride[2] && wstride[0] == ocg;
    w->L.deferred = hwio && (flags & I2R_PACK_DEFERRED);
    w->hwio = w->L.deferred ? wm : NULL;
    w->hwio_ld = wstride[3];
    w->relu = relu;
    w->L.rows_only = rows && (flags & I2R_PACK_ROWS_ONLY);
    w->has_panels = !w->L.rows_only && !w->L.deferred;
    packed_sizes(&w->L, w->has_panels, bias != NULL, &pbytes, &bbytes);
    w->rows = rows ? (void *)wm : NULL;
    w->rotations_ready = (flags & I2R_PACK_ROTATIONS) || !w->L.rotated_copies;
    if (add_sat(round_up64(pbytes), round_up64(bbytes)) >= SIZE_LIMIT) {
        i2r_free_weights(w);
        return I2R_ETOOBIG;
    }
    w->packed = buffer_alloc(pbytes, &w->packed_capacity);
    w->bias = buffer_alloc(bbytes, &w->bias_capacity);
    w->packed_bytes = round_up64(pbytes) + round_up64(bbytes);
    if ((pbytes && !w->packed) || (bbytes && !w->bias)) {
        i2r_free_weights(w);
        return I2R_ENOMEM;
    }
    void *panels = w->has_panels ? w->packed : NULL;
    if (nthreads < 1)
        nthreads = 1;
    i2r_status st = dtype == I2R_F64
        ? pack_weights_f64(&w->L, wm, wstride, bias, panels, w->bias, nthreads)
        : pack_weights_f32(&w->L, wm, wstride, bias, panels, w->bias, nthreads);
    if (st != I2R_OK) {
        i2r_free_weights(w);
        return st;
    }
    *out = w;
    return I2R_OK;
}

void i2r_free_weights(i2r_weights *w)
{
    if (!w) return;
    buffer_free(w->packed, w->packed_capacity);
    buffer_free(w->bias, w->bias_capacity);
    free(w);
}

int64_t i2r_packed_bytes(const i2r_weights *w) { return w->packed_bytes; }

int i2r_rotations_ready(const i2r_weights *w) { return w->rotations_ready; }
