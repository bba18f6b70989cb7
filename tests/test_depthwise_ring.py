"""Depthwise convolution through the ring of padded input rows ("i2r", and what "auto" runs
for every depthwise layer on NHWC, and on NCHW where output rows are under 14 pixels wide, up
to 16 with 25+ taps at stride 1 (plan.c: depthwise_ring): its input and output rows are
transposed in chunks of output rows; other NCHW layers run on channel planes): the
(KH-1)*dh + 1 rows one output row reads, each input row copied in once, and the dwrow
microkernel, whose tiles of R pixels (8 on AVX-512, 6 on AVX2, 4 portable; 7 on SIMD rows of
7-32 pixels where that recomputes fewer; R/2 on narrower rows, single pixels below that)
reuse every input vector for all the taps that read it when the kernel is 3 or 5 wide, stride
1 or 2, undilated, and load per tap otherwise.

Checked against the float64 reference over what the kernel distinguishes: the four
specialised kernels and the general one (7 wide, 1 wide, dilated, stride 3, rectangular),
channel counts around the vector blocks (tails of one vector and masked lanes), output widths
around the tile sizes (the last tile shifted onto computed pixels), asymmetric and oversized
padding (zero rows and columns in the ring), dilation taller than the stride (rows of
consecutive outputs interleave in the ring), bands of rows split among threads, bias, ReLU,
both dtypes and every kernel level. Bit for bit against "im2row" (the same products summed in
the same order by the strip-era microkernel on a lowered matrix), with NaN-filled scratch, and
the workspace and copies the kernels report against the planner's prediction.
"""
import numpy as np
import pytest

import im2row
from im2row import _backend
from im2row._api import make_spec, spec_geometry
from reference import conv2d_reference, tolerance
from conftest import COMPILED

needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled extension not available")

# (N, C, H, W, (KH, KW), stride, padding, dilation)
CASES = [
    (2, 32, 9, 11, 3, 1, 1, 1),               # 3x3 s1: one full channel block
    (1, 33, 12, 17, 3, 2, 1, 1),              # 3x3 s2, a masked lane
    (2, 48, 7, 7, 5, 1, 2, 1),                # 5x5 s1 on a 7-wide row: tiles of R/2
    (1, 17, 14, 14, 5, 2, 2, 1),              # 5x5 s2, one vector and one lane
    (1, 40, 10, 9, 3, 1, 2, 2),               # dilated: rows of outputs interleave
    (2, 24, 9, 10, 7, 3, 3, 1),               # 7x7 stride 3: the general kernel
    (1, 20, 6, 19, (3, 1), 1, ((0, 2), (1, 0)), 1),   # 1 wide, asymmetric padding
    (1, 96, 5, 4, 3, 1, 3, 1),                # padding past the kernel: zero rows, 2-wide row
    (3, 5, 3, 3, 3, 1, 1, (2, 1)),            # tiny, dilated rows only
    (1, 64, 30, 3, 3, 2, "same", 1),          # long bands for threads, 2-wide output rows
    (1, 7, 1, 25, (1, 5), 1, (0, 2), 1),      # one row, 5 wide: no ring reuse of rows
    (2, 12, 5, 21, 3, 1, 1, 1),               # 21-wide rows: NCHW on channel planes
    (1, 40, 14, 14, 3, 1, 1, 1),              # 14-wide rows: tiles of 7
    (2, 35, 28, 28, 3, 2, 1, 1),              # stride 2 onto 14-wide rows, masked lanes
    (1, 19, 28, 28, 3, 1, 1, 1),              # 28-wide rows: four tiles of 7
    (1, 9, 7, 17, (3, 5), 1, (1, 2), (1, 2)),  # dilated, 13-wide rows: tiles of 7 shifted
]
IDS = ["3x3s1", "3x3s2-lane", "5x5-w7", "5x5s2", "dil2", "7x7s3", "3x1-asym", "pad3",
       "tiny-dil", "same-s2", "1x5-row", "wide-planes", "3x3-w14", "3x3s2-w14-lane",
       "3x3-w28", "dil-w13"]


def _data(case, dtype, seed=0):
    n, c, h, w, k, stride, padding, dilation = case
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, c, h, w)).astype(dtype)
    wt = rng.uniform(-1, 1, (c, 1, kh, kw)).astype(dtype)
    b = rng.uniform(-1, 1, c).astype(dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    return x, wt, b, kwargs


def _in_layout(x, wt, layout):
    if layout == "NCHW":
        return x, wt
    return (np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
            np.ascontiguousarray(wt.transpose(2, 3, 1, 0)))


def _to_layout(y, layout):
    return y if layout == "NCHW" else np.moveaxis(y, 1, -1)


@needs_compiled
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ring_matches_reference_and_lowered_bits(case, dtype, layout, isa):
    x, wt, b, kw = _data(case, dtype)
    xl, wl = _in_layout(x, wt, layout)
    x_before = xl.copy()
    ref = _to_layout(conv2d_reference(x, wt, b, **kw), layout)
    lowered = im2row.conv2d(xl, wl, b, layout=layout, method="im2row", num_threads=1, **kw)
    plan = im2row.Conv2d(wl, b, layout=layout, method="i2r", **kw)
    auto = im2row.Conv2d(wl, b, layout=layout, **kw)
    assert auto.measure(xl, num_threads=1)[1]["method"] == "i2r"
    for threads in (1, 2, 3):
        y = plan(xl, num_threads=threads)
        np.testing.assert_allclose(y, ref, rtol=0, atol=tolerance(dtype, wt[0].size))
        assert np.array_equal(y, lowered), threads
        one_shot = im2row.conv2d(xl, wl, b, layout=layout, num_threads=threads, **kw)
        assert np.array_equal(one_shot, lowered), threads
    relu = im2row.Conv2d(wl, b, layout=layout, method="i2r", activation="relu", **kw)
    assert np.array_equal(relu(xl, num_threads=2), np.maximum(lowered, 0))
    no_bias = im2row.conv2d(xl, wl, layout=layout, method="i2r", num_threads=1, **kw)
    np.testing.assert_allclose(no_bias, ref - _to_layout(b[None, :, None, None], layout),
                               rtol=0, atol=2 * tolerance(dtype, wt[0].size))
    assert np.array_equal(xl, x_before)


@needs_compiled
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ring_with_nan_scratch_reports_its_prediction(case, threads, dtype, layout):
    """Scratch NaN-filled (a ring row read before it was written, or a padding column not
    zeroed, would show), into a NaN-filled output: every value written, the same bits as
    clean scratch, and the workspace and values copied are those the planner predicts (each
    input row a band reads copied once)."""
    x, wt, b, kw = _data(case, dtype, seed=1)
    xh, wh = _in_layout(x, wt, layout)
    spec = make_spec(xh.shape, wh.shape, np.dtype(dtype), kw["stride"], kw["padding"],
                     kw["dilation"], kw["groups"], layout, "test")
    geometry = spec_geometry(spec)
    native = _backend.native
    packed = native.PackedWeights(wh, layout, spec.groups, b, spec.stride, spec.dilation,
                                  True, False, _backend.isa(), False, 1, False)
    results = []
    for debug_nan in (True, False):
        y = np.full(spec.out_shape, np.nan, xh.dtype)
        ws, copied, used = packed.run(xh, y, geometry, "i2r", threads, debug_nan)
        results.append(y)
        f64 = np.dtype(dtype).itemsize == 8
        predicted = native.predict(geometry, "i2r", threads, _backend.isa(), f64, True, True)
        assert (ws, packed.nbytes, copied) == predicted
    assert not np.isnan(results[0]).any()
    assert np.array_equal(results[0], results[1])
    # the input rows each band of output rows reads, once per band (NHWC: TASKS_PER_THREAD
    # = 2 bands per thread, NCHW: one, shared among the images)
    n, c, h, w = x.shape
    want = (2 if layout == "NHWC" else 1) * threads if threads > 1 else 1
    parts = max(1, min(-(-want // n) if want > n else 1, spec.oh))
    (sh, sw), (dh, dw), pt, pl = spec.stride, spec.dilation, spec.padding[0], spec.padding[2]
    cols = max(0, min(pl + w, (spec.ow - 1) * sw + (spec.kw - 1) * dw + 1) - pl)
    rows = 0
    for band in range(parts):
        r0, r1 = band * spec.oh // parts, (band + 1) * spec.oh // parts
        read = {oh * sh + a * dh - pt for oh in range(r0, r1) for a in range(spec.kh)}
        rows += len([r for r in read if 0 <= r < h])
    ring = layout == "NHWC" or spec.ow < 14 or (spec.kh * spec.kw >= 25 and spec.ow <= 16 and
                                                spec.stride == (1, 1))   # depthwise_ring
    if not ring:   # NCHW channel planes: each image's input rows the outputs read, once
        rows = max(0, min(pt + h, (spec.oh - 1) * sh + (spec.kh - 1) * dh + 1) - pt)
    assert copied == n * rows * cols * c


@needs_compiled
@pytest.mark.parametrize("case", [
    (1, 4096, 6, 16, 3, 1, 1, 1),     # 3x3 s1: chunks of 1-4 output rows of 6 on any L2
    (1, 4096, 13, 31, 3, 2, 3, 3),    # s2, dilation 3: a chunk's rows not all read before
], ids=["3x3", "s2-dil3"])
def test_nchw_ring_transposes_in_chunks(case):
    """NCHW rows through the ring in chunks of output rows (half the L2 holds a chunk's input
    and output rows; with 4096 channels that is a few rows on any L2 up to 4 MiB): each chunk
    transposes all the input rows it reads, also those an earlier chunk read (with dilation 3
    and stride 2 some rows are first read past rows already read). Reference, "im2row" bits,
    NaN scratch and output."""
    x, wt, b, kw = _data(case, np.float32)
    ref = conv2d_reference(x, wt, b, **kw)
    lowered = im2row.conv2d(x, wt, b, method="im2row", num_threads=1, **kw)
    spec = make_spec(x.shape, wt.shape, x.dtype, kw["stride"], kw["padding"], kw["dilation"],
                     kw["groups"], "NCHW", "test")
    packed = _backend.native.PackedWeights(wt, "NCHW", spec.groups, b, spec.stride,
                                           spec.dilation, True, False, _backend.isa(), False,
                                           1, False)
    for threads in (1, 2):
        y = np.full(spec.out_shape, np.nan, np.float32)
        packed.run(x, y, spec_geometry(spec), "i2r", threads, True)
        np.testing.assert_allclose(y, ref, rtol=0, atol=tolerance(np.float32, wt[0].size))
        assert np.array_equal(y, lowered), threads


@needs_compiled
def test_depthwise_packs_one_copy_of_its_weights():
    """Neither the ring nor the NCHW planes rotate strip slots: a depthwise plan keeps one
    (KH, KW, C) copy whatever the method, and "i2r" needs no repacking."""
    x, wt, b, kw = _data(CASES[3], np.float32)
    xh, wh = _in_layout(x, wt, "NHWC")
    spec = make_spec(xh.shape, wh.shape, np.dtype(np.float32), kw["stride"], kw["padding"],
                     kw["dilation"], kw["groups"], "NHWC", "test")
    native = _backend.native
    for rotations in (True, False):
        packed = native.PackedWeights(wh, "NHWC", spec.groups, b, spec.stride, spec.dilation,
                                      rotations, False, _backend.isa(), False, 1, False)
        assert packed.rotations
        assert packed.nbytes < 2 * wh.nbytes + 4096
