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
