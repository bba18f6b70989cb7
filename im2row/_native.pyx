# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython glue between the Python API (im2row._api) and the C kernels (csrc/i2r.h).

It takes arrays the Python layer has already checked (shapes, dtypes, contiguity, sizes),
releases the GIL around every kernel call and turns a C status into a Python exception.
"""
from libc.stdint cimport int64_t

cdef extern from "i2r.h" nogil:
    ctypedef enum i2r_status:
        I2R_OK, I2R_ENOMEM, I2R_EINVAL, I2R_ETOOBIG
    ctypedef enum i2r_isa:
        I2R_ISA_GENERIC, I2R_ISA_AVX2, I2R_ISA_AVX512
    ctypedef enum i2r_dtype:
        I2R_F32, I2R_F64
    ctypedef enum i2r_method:
        I2R_STRIP, I2R_FULL, I2R_BLOCKED
    ctypedef struct i2r_geom:
        int64_t n, c, h, w, oc, kh, kw, groups, sh, sw, dh, dw, pt, pb, pl, pr, oh, ow
        int nhwc
        int64_t ow0
    ctypedef struct i2r_stats:
        int64_t workspace_bytes, copied_values, threads, packed_bytes
    ctypedef struct i2r_weights:
        pass
    enum:
        I2R_PACK_ROTATIONS, I2R_PACK_ROWS_ONLY, I2R_PACK_DEFERRED
    i2r_status i2r_pack_weights(i2r_dtype dtype, i2r_isa isa, const void *wm,
                                const int64_t *wstride, const void *bias, int64_t groups, int64_t kh, int64_t kw,
                                int64_t cg, int64_t ocg, int64_t sw, int64_t dw,
                                int flags, int relu, int nthreads, i2r_weights **out)
    void i2r_free_weights(i2r_weights *w)
    int64_t i2r_packed_bytes(const i2r_weights *w)
    int i2r_rotations_ready(const i2r_weights *w)
    int i2r_pack_flags(i2r_dtype dtype, i2r_isa isa, i2r_method method, const i2r_geom *g)
    i2r_method i2r_choose_method(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
    int i2r_one_sum_order(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
    void i2r_release_buffers()
    i2r_status i2r_predict(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, i2r_method method,
                           int nthreads, int pack_flags, int with_bias, i2r_stats *stats)
    enum:
        I2R_RUN_DEBUG_NAN
        I2R_RUN_PLAIN_STORES
    i2r_status i2r_conv(const i2r_weights *w, const i2r_geom *g, i2r_method method,
                        int nthreads, int flags, const void *x, void *y, i2r_stats *stats)
    int i2r_streams_results(const i2r_weights *w, const i2r_geom *g, i2r_method method,
                            int nthreads)
    i2r_status i2r_grad_weight(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int nthreads,
                               const void *x, const void *dy, void *dw, i2r_stats *stats)
    i2r_status i2r_predict_grad_weight(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g,
                                       int nthreads, i2r_stats *stats)
    i2r_status i2r_transpose_scatter(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g,
                                     int nthreads, const void *dy, const void *w, void *dx)
    int i2r_transpose_scatter_preferred(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
    ctypedef struct i2r_winograd:
        pass
    int i2r_winograd_tile(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g)
    int i2r_winograd_preferred(i2r_dtype dtype, i2r_isa isa, const i2r_geom *g, int one_shot)
    i2r_status i2r_winograd_pack(i2r_dtype dtype, i2r_isa isa, int tile, const void *wm,
                                 const int64_t *wstride, const void *bias, int64_t groups,
                                 int64_t cg, int64_t ocg, int relu, int nthreads,
                                 i2r_winograd **out)
    void i2r_winograd_free(i2r_winograd *w)
    int64_t i2r_winograd_packed_bytes(const i2r_winograd *w)
    i2r_status i2r_winograd_predict(i2r_dtype dtype, i2r_isa isa, int tile, const i2r_geom *g,
                                    int nthreads, int with_bias, i2r_stats *stats)
    i2r_status i2r_winograd_conv(const i2r_winograd *w, const i2r_geom *g, int nthreads,
                                 int debug_nan, const void *x, void *y, i2r_stats *stats)
    i2r_isa i2r_cpu_isa()
    int i2r_have_openmp()
    int i2r_max_threads()

ctypedef fused floating:
    float
    double

_ISA_NAMES = ("generic", "avx2", "avx512")
# the compiled methods, in the order of i2r_method
METHODS = ("i2r", "im2row", "blocked")


cdef bint _one_thread = False


def run_on_one_thread():
    """From now on every kernel call runs on one thread. im2row._backend calls it in the child
    of a fork when GNU OpenMP is loaded: libgomp's thread pool does not survive fork(), and a
    parallel region of more than one thread would hang the child."""
    global _one_thread
    _one_thread = True


def cpu_isa():
    """The best kernel level this CPU supports: 'generic', 'avx2' or 'avx512'."""
    return _ISA_NAMES[<int>i2r_cpu_isa()]


def openmp():
    return i2r_have_openmp()


def max_threads():
    return i2r_max_threads()


cdef i2r_method _method_code(str name) except *:
    cdef int code = METHODS.index(name)
    return <i2r_method>code


cdef i2r_isa _isa_code(str name) except *:
    cdef int code = _ISA_NAMES.index(name)
    return <i2r_isa>code


cdef void _fill_geom(i2r_geom *g, tuple geom) except *:
    (g.n, g.c, g.h, g.w, g.oc, g.kh, g.kw, g.groups, g.sh, g.sw, g.dh, g.dw,
     g.pt, g.pb, g.pl, g.pr, g.oh, g.ow, g.nhwc, g.ow0) = geom


# the size that saturated, in the planner's terms (i2r_predict); see SizeError
_LIMIT = 2**62


class SizeError(ValueError):
    """A buffer of the call would need 2**62 bytes or more (the planner refused it)."""


cdef _check(i2r_status status, str what):
    if status == I2R_ETOOBIG:
        raise SizeError(f"{what} would need at least {_LIMIT} bytes, more than a 64-bit byte "
                        f"count can address")
    if status == I2R_ENOMEM:
        raise MemoryError(f"im2row: out of memory in {what}")
    if status != I2R_OK:
        raise RuntimeError(f"im2row: internal error in {what} (status {<int>status}); "
                           f"the arguments passed the Python checks, please report this")


def predict(tuple geom, str method, int nthreads, str isa, bint f64, bint rotations,
            bint with_bias, bint deferred=False):
    """(workspace bytes, packed-weight bytes, values copied) of one call, without running it.
    rotations, deferred: how the weights were packed (see PackedWeights). Raises SizeError
    when one of them reaches 2**62 bytes."""
    cdef i2r_geom g
    cdef i2r_stats st
    _fill_geom(&g, geom)
    if _one_thread:
        nthreads = 1
    status = i2r_predict(I2R_F64 if f64 else I2R_F32, _isa_code(isa), &g,
                         _method_code(method), nthreads,
                         (I2R_PACK_ROTATIONS if rotations else 0) |
                         (I2R_PACK_DEFERRED if deferred else 0), with_bias, &st)
    if status == I2R_ETOOBIG:
        what = ("the scratch of all threads" if st.workspace_bytes >= _LIMIT else
                "the packed weights" if st.packed_bytes >= _LIMIT else
                "the values copied into buffers")
        _check(status, what)
    _check(status, "predict")
    return st.workspace_bytes, st.packed_bytes, st.copied_values


def choose_method(tuple geom, str isa, bint f64):
    """The compiled method "auto" runs for this geometry (the C planner's rule)."""
    cdef i2r_geom g
    _fill_geom(&g, geom)
    return METHODS[<int>i2r_choose_method(I2R_F64 if f64 else I2R_F32, _isa_code(isa), &g)]


def one_sum_order(tuple geom, str isa, bint f64):
    """Whether "i2r" and "blocked" give the same bits on this geometry (the C planner's
    layout decides: i2r_one_sum_order)."""
    cdef i2r_geom g
    _fill_geom(&g, geom)
    return bool(i2r_one_sum_order(I2R_F64 if f64 else I2R_F32, _isa_code(isa), &g))


def pack_flags(tuple geom, str method, str isa, bint f64):
    """(rotations, rows_only, deferred): how PackedWeights packs for one call of `method`
    (the C planner's i2r_pack_flags)."""
    cdef i2r_geom g
    _fill_geom(&g, geom)
    cdef int flags = i2r_pack_flags(I2R_F64 if f64 else I2R_F32, _isa_code(isa),
                                    _method_code(method), &g)
    return (bool(flags & I2R_PACK_ROTATIONS), bool(flags & I2R_PACK_ROWS_ONLY),
            bool(flags & I2R_PACK_DEFERRED))


def release_buffers():
    """Free the large scratch blocks the kernels keep for reuse between calls."""
    i2r_release_buffers()


cdef i2r_status _pack(const floating[::1] weight, tuple strides, int64_t groups, int64_t kh,
                      int64_t kw, int64_t cg, int64_t ocg, int64_t sw, int64_t dw,
                      const floating[::1] bias, int flags, bint relu, i2r_isa isa,
                      int nthreads, i2r_weights **out):
    cdef int64_t ws[5]
    ws[0], ws[1], ws[2], ws[3], ws[4] = strides
    cdef const void *wptr = &weight[0] if weight.shape[0] else NULL
    cdef const void *bptr = &bias[0] if bias is not None else NULL
    cdef i2r_dtype dt = I2R_F64 if floating is double else I2R_F32
    cdef i2r_status st
    with nogil:
        st = i2r_pack_weights(dt, isa, wptr, ws, bptr, groups, kh, kw, cg, ocg, sw, dw,
                              flags, relu, nthreads, out)
    return st


cdef i2r_status _conv(const i2r_weights *w, const i2r_geom *g, i2r_method method, int nthreads,
                      int flags, const floating[:, :, :, ::1] x,
                      floating[:, :, :, ::1] y, i2r_stats *st):
    cdef const void *xptr = &x[0, 0, 0, 0]
    cdef void *yptr = &y[0, 0, 0, 0]
    cdef i2r_status status
    with nogil:   # other Python threads run while the kernels do
        status = i2r_conv(w, g, method, nthreads, flags, xptr, yptr, st)
    return status


cdef tuple _weight_strides(weight, str layout, int64_t groups):
    """(groups, kh, kw, C/groups, OC/groups) element strides of C-contiguous weights."""
    cdef int64_t oc, cg, kh, kw
    if layout == "NCHW":
        oc, cg, kh, kw = weight.shape
        return ((oc // groups) * cg * kh * kw, kw, 1, kh * kw, cg * kh * kw)
    kh, kw, cg, oc = weight.shape
    return (oc // groups, kw * cg * oc, cg * oc, oc, 1)


cdef class PackedWeights:
    """Weights packed once for the GEMM microkernels of one ISA level.

    weight: C-contiguous (OC, C/groups, KH, KW) for NCHW or (KH, KW, C/groups, OC) for NHWC,
    read in place; bias: (OC,) or None. rotations: pack a copy per strip rotation (for "i2r");
    without, only the unrotated copy ("im2row" and "blocked" need no more). deferred (NHWC):
    no panels; "im2row" and "blocked" pack them as they go, reading the weights in place
    ("i2r" refuses). rows_only: for 1x1
    weights only what pointwise NCHW runs with. nthreads: threads that pack.
    """
    cdef i2r_weights *w
    cdef readonly str isa
    cdef readonly bint f64
    cdef object source     # the weights: OIHW ones are read in place by every run

    def __cinit__(self, weight, str layout, int64_t groups, bias, tuple stride, tuple dilation,
                  bint rotations, bint relu, str isa, bint rows_only=False, int nthreads=1,
                  bint deferred=False):
        cdef int64_t oc, cg, kh, kw
        if layout == "NCHW":
            oc, cg, kh, kw = weight.shape
        else:
            kh, kw, cg, oc = weight.shape
        strides = _weight_strides(weight, layout, groups)
        cdef i2r_isa code = _isa_code(isa)
        cdef i2r_status st
        self.isa = isa
        self.source = weight
        self.f64 = weight.dtype.itemsize == 8
        cdef int flags = ((I2R_PACK_ROTATIONS if rotations else 0) |
                          (I2R_PACK_ROWS_ONLY if rows_only else 0) |
                          (I2R_PACK_DEFERRED if deferred else 0))
        flat = weight.reshape(-1)
        if self.f64:
            st = _pack[double](flat, strides, groups, kh, kw, cg, oc // groups, stride[1],
                               dilation[1], bias, flags, relu, code, nthreads, &self.w)
        else:
            st = _pack[float](flat, strides, groups, kh, kw, cg, oc // groups, stride[1],
                              dilation[1], bias, flags, relu, code, nthreads, &self.w)
        _check(st, "the packed weights" if st == I2R_ETOOBIG else "weight packing")

    def __dealloc__(self):
        i2r_free_weights(self.w)

    @property
    def rotations(self):
        """Whether "i2r" runs with these weights as fast as they allow (no repacking)."""
        return bool(i2r_rotations_ready(self.w))

    @property
    def nbytes(self):
        return i2r_packed_bytes(self.w)

    def streams(self, tuple geom, str method, int nthreads):
        """Whether run() streams the results past the caches unless told plain_stores."""
        cdef i2r_geom g
        _fill_geom(&g, geom)
        if _one_thread:
            nthreads = 1
        return bool(i2r_streams_results(self.w, &g, _method_code(method), nthreads))

    def run(self, x, y, tuple geom, str method, int nthreads, bint debug_nan,
            bint plain_stores=False):
        """y = conv(x) (both C-contiguous 4-D, checked by the caller); returns (workspace
        bytes, values copied, threads). plain_stores: store results plainly where they would
        be streamed past the caches (the same bits)."""
        cdef i2r_geom g
        cdef i2r_stats st
        cdef i2r_status status
        _fill_geom(&g, geom)
        if _one_thread:
            nthreads = 1
        cdef i2r_method code = _method_code(method)
        cdef int flags = ((I2R_RUN_DEBUG_NAN if debug_nan else 0) |
                          (I2R_RUN_PLAIN_STORES if plain_stores else 0))
        if self.f64:
            status = _conv[double](self.w, &g, code, nthreads, flags, x, y, &st)
        else:
            status = _conv[float](self.w, &g, code, nthreads, flags, x, y, &st)
        _check(status, "the scratch of all threads" if status == I2R_ETOOBIG else "conv2d")
        return st.workspace_bytes, st.copied_values, st.threads


cdef i2r_status _grad_weight(i2r_isa isa, const i2r_geom *g, int nthreads,
                             const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                             floating[:, :, :, ::1] dw, i2r_stats *st):
    cdef const void *xptr = &x[0, 0, 0, 0]
    cdef const void *dyptr = &dy[0, 0, 0, 0]
    cdef void *dwptr = &dw[0, 0, 0, 0]
    cdef i2r_dtype dt = I2R_F64 if floating is double else I2R_F32
    cdef i2r_status status
    with nogil:
        status = i2r_grad_weight(dt, isa, g, nthreads, xptr, dyptr, dwptr, st)
    return status


def grad_weight(x, dy, dw, tuple geom, int nthreads, str isa):
    """dw = the weight gradient of conv(x) given dy (all C-contiguous 4-D, non-empty, checked
    by the caller; dw in the layout's weight order). Returns (workspace bytes, threads)."""
    cdef i2r_geom g
    cdef i2r_stats st
    cdef i2r_status status
    _fill_geom(&g, geom)
    if _one_thread:
        nthreads = 1
    if x.dtype.itemsize == 8:
        status = _grad_weight[double](_isa_code(isa), &g, nthreads, x, dy, dw, &st)
    else:
        status = _grad_weight[float](_isa_code(isa), &g, nthreads, x, dy, dw, &st)
    _check(status, "the scratch of all threads" if status == I2R_ETOOBIG else "grad_weight")
    return st.workspace_bytes, st.threads


def predict_grad_weight(tuple geom, int nthreads, str isa, bint f64):
    """(workspace bytes, values lowered) of one grad_weight call, without running it."""
    cdef i2r_geom g
    cdef i2r_stats st
    _fill_geom(&g, geom)
    if _one_thread:
        nthreads = 1
    status = i2r_predict_grad_weight(I2R_F64 if f64 else I2R_F32, _isa_code(isa), &g,
                                     nthreads, &st)
    _check(status, "the scratch of all threads" if status == I2R_ETOOBIG else "predict")
    return st.workspace_bytes, st.copied_values


cdef i2r_status _scatter(i2r_isa isa, const i2r_geom *g, int nthreads,
                         const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] w,
                         floating[:, :, :, ::1] dx):
    cdef const void *dyptr = &dy[0, 0, 0, 0]
    cdef const void *wptr = &w[0, 0, 0, 0]
    cdef void *dxptr = &dx[0, 0, 0, 0]
    cdef i2r_dtype dt = I2R_F64 if floating is double else I2R_F32
    cdef i2r_status status
    with nogil:
        status = i2r_transpose_scatter(dt, isa, g, nthreads, dyptr, wptr, dxptr)
    return status


def transpose_scatter(dy, w, dx, tuple geom, int nthreads, str isa):
    """dx = the input gradient of the NHWC convolution geom given dy, in scatter form (all
    C-contiguous 4-D, non-empty, checked by the caller; w HWIO)."""
    cdef i2r_geom g
    cdef i2r_status status
    _fill_geom(&g, geom)
    if _one_thread:
        nthreads = 1
    if dy.dtype.itemsize == 8:
        status = _scatter[double](_isa_code(isa), &g, nthreads, dy, w, dx)
    else:
        status = _scatter[float](_isa_code(isa), &g, nthreads, dy, w, dx)
    _check(status, "transpose_scatter")


def transpose_scatter_preferred(tuple geom, str isa, bint f64):
    """Whether the C planner runs this input gradient in scatter form."""
    cdef i2r_geom g
    _fill_geom(&g, geom)
    return bool(i2r_transpose_scatter_preferred(I2R_F64 if f64 else I2R_F32, _isa_code(isa),
                                                &g))


def winograd_tile(tuple geom, str isa, bint f64):
    """The Winograd output tile (2 or 4) the planner picks for this geometry; 0 where
    Winograd does not apply (not 3x3, stride 1, dilation 1)."""
    cdef i2r_geom g
    _fill_geom(&g, geom)
    return i2r_winograd_tile(I2R_F64 if f64 else I2R_F32, _isa_code(isa), &g)


def winograd_preferred(tuple geom, str isa, bint f64, bint one_shot):
    """Whether "auto", allowed Winograd, runs it on this geometry (the C planner's rule);
    one_shot: the weights would be transformed for one call only."""
    cdef i2r_geom g
    _fill_geom(&g, geom)
    return bool(i2r_winograd_preferred(I2R_F64 if f64 else I2R_F32, _isa_code(isa), &g,
                                       one_shot))


def winograd_predict(tuple geom, int tile, int nthreads, str isa, bint f64, bint with_bias):
    """(workspace bytes, packed-weight bytes, values transformed) of one Winograd call."""
    cdef i2r_geom g
    cdef i2r_stats st
    _fill_geom(&g, geom)
    if _one_thread:
        nthreads = 1
    status = i2r_winograd_predict(I2R_F64 if f64 else I2R_F32, _isa_code(isa), tile, &g,
                                  nthreads, with_bias, &st)
    if status == I2R_ETOOBIG:
        _check(status, "the scratch of all threads" if st.workspace_bytes >= _LIMIT
               else "the transformed weights")
    _check(status, "predict")
    return st.workspace_bytes, st.packed_bytes, st.copied_values


cdef i2r_status _wino_pack(const floating[::1] weight, tuple strides, int tile, int64_t groups,
                           int64_t cg, int64_t ocg, const floating[::1] bias, bint relu,
                           i2r_isa isa, int nthreads, i2r_winograd **out):
    cdef int64_t ws[5]
    ws[0], ws[1], ws[2], ws[3], ws[4] = strides
    cdef const void *wptr = &weight[0] if weight.shape[0] else NULL
    cdef const void *bptr = &bias[0] if bias is not None else NULL
    cdef i2r_dtype dt = I2R_F64 if floating is double else I2R_F32
    cdef i2r_status st
    with nogil:
        st = i2r_winograd_pack(dt, isa, tile, wptr, ws, bptr, groups, cg, ocg, relu, nthreads,
                               out)
    return st


cdef i2r_status _wino_conv(const i2r_winograd *w, const i2r_geom *g, int nthreads,
                           bint debug_nan, const floating[:, :, :, ::1] x,
                           floating[:, :, :, ::1] y, i2r_stats *st):
    cdef const void *xptr = &x[0, 0, 0, 0]
    cdef void *yptr = &y[0, 0, 0, 0]
    cdef i2r_status status
    with nogil:
        status = i2r_winograd_conv(w, g, nthreads, debug_nan, xptr, yptr, st)
    return status


cdef class WinogradWeights:
    """3x3 weights transformed for Winograd F(tile x tile, 3x3) and packed (tile 2 or 4);
    weight and bias as for PackedWeights, read during construction only."""
    cdef i2r_winograd *w
    cdef readonly int tile
    cdef readonly bint f64

    def __cinit__(self, weight, str layout, int64_t groups, bias, int tile, bint relu, str isa,
                  int nthreads=1):
        cdef int64_t oc = weight.shape[0] if layout == "NCHW" else weight.shape[3]
        cdef int64_t cg = weight.shape[1] if layout == "NCHW" else weight.shape[2]
        strides = _weight_strides(weight, layout, groups)
        self.tile = tile
        self.f64 = weight.dtype.itemsize == 8
        flat = weight.reshape(-1)
        cdef i2r_status st
        if self.f64:
            st = _wino_pack[double](flat, strides, tile, groups, cg, oc // groups, bias, relu,
                                    _isa_code(isa), nthreads, &self.w)
        else:
            st = _wino_pack[float](flat, strides, tile, groups, cg, oc // groups, bias, relu,
                                   _isa_code(isa), nthreads, &self.w)
        _check(st, "the transformed weights" if st == I2R_ETOOBIG else "Winograd weight packing")

    def __dealloc__(self):
        i2r_winograd_free(self.w)

    @property
    def nbytes(self):
        return i2r_winograd_packed_bytes(self.w)

    def run(self, x, y, tuple geom, int nthreads, bint debug_nan):
        """y = conv(x) by Winograd (as PackedWeights.run); returns (workspace bytes, values
        transformed, threads)."""
        cdef i2r_geom g
        cdef i2r_stats st
        cdef i2r_status status
        _fill_geom(&g, geom)
        if _one_thread:
            nthreads = 1
        if self.f64:
            status = _wino_conv[double](self.w, &g, nthreads, debug_nan, x, y, &st)
        else:
            status = _wino_conv[float](self.w, &g, nthreads, debug_nan, x, y, &st)
        _check(status, "the scratch of all threads" if status == I2R_ETOOBIG else "conv2d")
        return st.workspace_bytes, st.copied_values, st.threads
