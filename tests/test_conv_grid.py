"""Every method against the independent float64 reference (tests/reference.py).

* ``test_grid`` / ``test_product_grid``: all methods at the default kernel level, both layouts,
  both dtypes, over a curated list of geometries and a small product of strides, dilations,
  paddings and kernels.
* ``test_compiled_*``: the compiled methods at every ISA level, 1 and 2 threads (bit-identical),
  ``out`` pre-filled with NaN, scratch pre-filled with NaN (``debug_strip``), tile-edge shapes.
* Plan reuse, integer-valued exactness, fused ReLU, memory orders, empty inputs.
"""
import itertools
import zlib
from dataclasses import dataclass, replace

import numpy as np
import pytest

import im2row
from im2row import _backend
from reference import conv2d_reference, pad_amounts, pair, to_nhwc, tolerance

COMPILED = _backend.native is not None
COMPILED_METHODS = ("i2r", "im2row", "blocked")
ALL_METHODS = ("numpy", "im2col") + (COMPILED_METHODS + ("auto",) if COMPILED else ())
LAYOUTS = ("NCHW", "NHWC")
DTYPES = (np.float32, np.float64)
needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled extension not available")


@dataclass(frozen=True)
class Case:
    name: str
    n: int = 2
    c: int = 3
    h: int = 7
    w: int = 6
    oc: int = 5
    kh: int = 3
    kw: int = 3
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True
    batched: bool = True

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    @property
    def depth(self):
        return self.c // self.groups * self.kh * self.kw


def valid(case):
    """Whether the dilated kernel fits in the padded input (else the API must refuse it)."""
    pt, pb, pl, pr = pad_amounts(case.h, case.w, case.kh, case.kw, pair(case.stride),
                                 case.padding, pair(case.dilation))
    dh, dw = pair(case.dilation)
    return ((case.kh - 1) * dh + 1 <= case.h + pt + pb and
            (case.kw - 1) * dw + 1 <= case.w + pl + pr)


CASES = [
    Case("basic-3x3"),
    Case("pad1", padding=1),
    Case("n1-pad1", n=1, padding=1),
    Case("n3-unpadded", n=3),
    Case("stride2-pad1", h=9, w=8, stride=2, padding=1),
    Case("stride3", h=10, w=11, stride=3),
    Case("stride-1x2", stride=(1, 2), padding=1),
    Case("stride-3x1", h=11, stride=(3, 1), padding=1),
    Case("stride-2x3", h=9, w=10, stride=(2, 3)),
    Case("pad2", padding=2),
    Case("pad-pair-1x2", padding=(1, 2)),
    Case("pad-pair-2x0", padding=(2, 0)),
    Case("pad-asym-a", padding=((0, 2), (1, 0))),
    Case("pad-asym-b", padding=((2, 1), (0, 3)), stride=2),
    Case("pad-asym-c", padding=((3, 0), (0, 1)), dilation=(2, 1)),
    Case("valid", padding="valid"),
    Case("same-k3", padding="same"),
    Case("same-k2-s2", h=7, w=9, kh=2, kw=2, stride=2, padding="same"),
    Case("same-k4-s3", h=8, w=10, kh=4, kw=4, stride=3, padding="same"),
    Case("same-k2x4-s2x1", h=9, w=6, kh=2, kw=4, stride=(2, 1), padding="same"),
    Case("same-k4x2-d2-s2", h=9, w=8, kh=4, kw=2, stride=2, dilation=2, padding="same"),
    Case("same-k5-s2-d3", h=7, w=7, kh=5, kw=5, stride=2, dilation=3, padding="same"),
    Case("pad-larger-than-input", h=2, w=3, padding=4),
    Case("pad-larger-asym", h=1, w=2, padding=((5, 2), (0, 4)), stride=2),
    Case("dil2", h=9, w=9, dilation=2),
    Case("dil3-pad2", h=8, w=9, dilation=3, padding=2),
    Case("dil-1x2", h=8, w=9, dilation=(1, 2), padding=1),
    Case("dil-3x1", h=10, w=6, dilation=(3, 1)),
    Case("dil-2x3-s2", h=11, w=12, dilation=(2, 3), stride=2, padding=1),
    Case("dil2-s3", h=11, w=14, dilation=2, stride=3, padding=1),
    Case("dil3-s2-w", h=6, w=17, kh=2, kw=3, dilation=(1, 3), stride=(1, 2)),
    Case("dil2-s2-kw4", h=5, w=16, kh=1, kw=4, dilation=(1, 2), stride=(1, 2)),
    Case("dil2-s4-kw5", h=4, w=30, kh=2, kw=5, dilation=(1, 2), stride=(1, 4), padding=1),
    Case("dil4-s6-kw3", h=4, w=30, kh=2, kw=3, dilation=(1, 4), stride=(1, 6), padding=2),
    Case("stride-gt-kernel", h=9, w=13, stride=(4, 5), padding=1),
    Case("groups2", c=4, oc=6, groups=2, padding=1),
    Case("groups3", c=6, oc=9, groups=3, padding=1, stride=2),
    Case("groups3-dil2", c=9, oc=3, groups=3, h=9, w=9, dilation=2, padding=1),
    Case("depthwise", c=4, oc=4, groups=4, padding=1),
    Case("depthwise-s2-nobias", c=5, oc=5, groups=5, stride=2, padding=1, bias=False),
    Case("depthwise-mult2", c=3, oc=6, groups=3, padding=1),
    Case("depthwise-mult3-dil2", c=2, oc=6, groups=2, h=9, w=8, dilation=2, padding=2),
    Case("nobias", bias=False),
    Case("nobias-pad-same", bias=False, padding="same"),
    Case("c1", c=1, padding=1),
    Case("c17", c=17, oc=7, padding=1),
    Case("oc1", oc=1, padding=1),
    Case("oc7", oc=7),
    Case("oc31", oc=31, padding=1),
    Case("oc33", oc=33, padding=1),
    Case("1x1", kh=1, kw=1),
    Case("1x1-s2", kh=1, kw=1, stride=2),
    # NCHW "blocked": W*X panels of pixels from several output rows, plane by plane
    Case("1x1-s23-c40", n=2, c=40, h=13, w=37, oc=35, kh=1, kw=1, stride=(2, 3)),
    Case("1x1-s2-45-panels", n=2, c=24, h=61, w=45, oc=40, kh=1, kw=1, stride=2),
    Case("1x1-pad1", kh=1, kw=1, padding=1),
    Case("1x1-groups", c=6, oc=4, kh=1, kw=1, groups=2),
    Case("1x5", kh=1, kw=5, padding=(0, 2)),
    Case("5x1", kh=5, kw=1, padding=(2, 0)),
    Case("1x3-s2", kh=1, kw=3, stride=2),
    Case("kernel-eq-input", h=5, w=4, kh=5, kw=4),
    Case("kernel-eq-padded", h=3, w=2, kh=5, kw=4, padding=1),
    Case("kernel-eq-padded-dil", h=5, w=5, kh=3, kw=3, dilation=3, padding=2),
    Case("h1-w1-pad1", h=1, w=1, padding=1),
    Case("unbatched", batched=False, padding=1),
    Case("unbatched-groups-s2", batched=False, c=4, oc=4, groups=2, stride=2),
    Case("unbatched-1x1", batched=False, kh=1, kw=1),
]
assert all(valid(c) for c in CASES)
assert len({c.name for c in CASES}) == len(CASES)


def _product_cases():
    cases = []
    kernels = ((1, 1), (2, 3), (3, 3), (3, 2))
    strides = (1, 2, 3, (1, 3))
    dilations = (1, 2, (2, 1))
    paddings = (0, 1, "same", ((1, 0), (0, 2)))
    for i, ((kh, kw), s, d, p) in enumerate(itertools.product(kernels, strides, dilations,
                                                               paddings)):
        groups = 1 + i % 2
        case = Case(f"k{kh}x{kw}-s{s}-d{d}-p{p}-g{groups}".replace(" ", ""), n=1, c=4, h=8,
                    w=7, oc=6, kh=kh, kw=kw, stride=s, padding=p, dilation=d, groups=groups)
        if valid(case):
            cases.append(case)
    return cases


PRODUCT_CASES = _product_cases()


def ids(cases):
    return [c.name for c in cases]


# ---------------------------------------------------------------------------- helpers

_DATA = {}


def data(case, dtype, integer=False):
    """(x NCHW, w OIHW, bias or None, reference float64 NCHW) for a case, cached."""
    key = (case, np.dtype(dtype).name, integer)
    if key not in _DATA:
        rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
        xs = (case.n, case.c, case.h, case.w)
        ws = (case.oc, case.c // case.groups, case.kh, case.kw)
        if integer:
            x = rng.integers(-8, 9, xs).astype(dtype)
            w = rng.integers(-8, 9, ws).astype(dtype)
            b = rng.integers(-8, 9, case.oc).astype(dtype) if case.bias else None
        else:
            x = rng.uniform(-1, 1, xs).astype(dtype)
            w = rng.uniform(-1, 1, ws).astype(dtype)
            b = rng.uniform(-1, 1, case.oc).astype(dtype) if case.bias else None
        ref = conv2d_reference(x, w, b, **case.kwargs)
        if not case.batched:
            x, ref = x[0], ref[0]
        _DATA[key] = (x, w, b, ref)
    return _DATA[key]


def to_layout(x, w, layout):
    return (x, w) if layout == "NCHW" else to_nhwc(x, w)


def from_layout(res, layout):
    """A result in `layout` -> NCHW (a view)."""
    return res if layout == "NCHW" else np.moveaxis(res, -1, -3)


def out_shape(ref, layout):
    return ref.shape if layout == "NCHW" else np.moveaxis(ref, -3, -1).shape


def conv(case, x, w, b, layout, method, **kw):
    xl, wl = to_layout(x, w, layout)
    res = im2row.conv2d(xl, wl, b, layout=layout, method=method, **case.kwargs, **kw)
    return res


def check_close(res, ref, case, dtype, layout, what=""):
    assert res.dtype == np.dtype(dtype), what
    assert res.shape == out_shape(ref, layout), what
    got = from_layout(res, layout)
    np.testing.assert_allclose(got, ref, rtol=0, atol=tolerance(dtype, case.depth),
                               err_msg=f"{case} {layout} {np.dtype(dtype).name} {what}")


# ---------------------------------------------------------------------------- all methods

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_grid(case, method, layout, dtype):
    x, w, b, ref = data(case, dtype)
    res = conv(case, x, w, b, layout, method)
    check_close(res, ref, case, dtype, layout, method)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=ids(PRODUCT_CASES))
def test_product_grid(case, method):
    for layout, dtype in itertools.product(LAYOUTS, DTYPES):
        x, w, b, ref = data(case, dtype)
        check_close(conv(case, x, w, b, layout, method), ref, case, dtype, layout, method)


# ---------------------------------------------------------------------------- compiled

def check_compiled(case, method, layouts=LAYOUTS, dtypes=DTYPES, integer=False):
    """Threads 1 and 2 into NaN-filled `out`: correct and bit-identical."""
    for layout, dtype in itertools.product(layouts, dtypes):
        x, w, b, ref = data(case, dtype, integer)
        results = []
        for threads in (1, 2):
            out = np.full(out_shape(ref, layout), np.nan, dtype)
            res = conv(case, x, w, b, layout, method, out=out, num_threads=threads)
            assert res is out
            what = f"{method} threads={threads} isa={_backend.isa()}"
            if integer:
                np.testing.assert_array_equal(from_layout(res, layout), ref, err_msg=what)
            else:
                check_close(res, ref, case, dtype, layout, what)
            results.append(res)
        np.testing.assert_array_equal(results[0], results[1],
                                      err_msg=f"{case} {layout} {method}: 1 vs 2 threads")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", COMPILED_METHODS)
@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_compiled_grid(case, method, layout, isa, debug_strip):
    check_compiled(case, method, layouts=(layout,))


@pytest.mark.parametrize("method", COMPILED_METHODS)
@pytest.mark.parametrize("case", PRODUCT_CASES, ids=ids(PRODUCT_CASES))
def test_compiled_product_grid(case, method, isa, debug_strip):
    check_compiled(case, method)


# Tile edges. With W=3 and a 3x3 kernel OW=1, so the GEMM has OH rows for both methods
# (one output column for i2r, OH*OW pixels for im2row): MR is 14 (AVX-512), 6 (AVX2), 4.
ROW_CASES = [Case(f"rows{m}", n=1, c=3, h=m + 2, w=3, oc=33) for m in
             list(range(1, 16)) + [28, 29]]
ROW_CASES += [Case(f"rows{m}-ow2", n=2, c=2, h=m + 2, w=4, oc=17, bias=False)
              for m in (1, 5, 7, 13, 15)]
# OC around NR (32 f32 / 16 f64 on AVX-512, 16 / 8 on AVX2 and generic); 15x15 = 225
# pixels so the im2row GEMM also crosses the M block (8 register tiles).
OC_CASES = [Case(f"oc{oc}", n=1, c=3, h=17, w=17, oc=oc) for oc in
            (1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65)]
# K = Cg*KH*KW around the KC block (256) and its multiples.
K_CASES = [
    Case("K252-c28", n=1, c=28, h=6, w=5, oc=9, padding=1),
    Case("K261-c29", n=1, c=29, h=6, w=5, oc=9, padding=1),
    Case("K256-c256-1x1", n=1, c=256, h=4, w=5, oc=9, kh=1, kw=1),
    Case("K257-c257-1x1", n=1, c=257, h=4, w=5, oc=9, kh=1, kw=1),
    Case("K504-c56", n=1, c=56, h=5, w=5, oc=17, padding=1),
    Case("K513-c57", n=1, c=57, h=5, w=5, oc=17, padding=1),
    Case("K261-groups2-c58", n=1, c=58, h=5, w=6, oc=10, groups=2, padding=1),
    Case("seg258-c86-dil2", n=1, c=86, h=7, w=7, oc=9, dilation=2, padding=1),
    Case("seg255-c85-dil-2x1", n=1, c=85, h=7, w=6, oc=9, dilation=(2, 1), padding=1),
    Case("K2700-c300", n=1, c=300, h=5, w=5, oc=17, padding=1),
    Case("K2700-c300-s2-n2", n=2, c=300, h=6, w=7, oc=33, stride=2, padding=1),
]
# Stacked strips: with N > 1 and output columns of a few rows, "i2r" stacks several images in
# one strip (GEMM rows straddling two images are computed and dropped); uneven stacks (N=5,
# 7), strides, dilations, groups and depthwise.
STACK_CASES = [
    Case("stack-n8-oh5", n=8, c=6, h=7, w=6, oc=17),
    Case("stack-n5-oh3-pad", n=5, c=4, h=3, w=5, oc=9, padding=1),
    Case("stack-n7-s2-dil", n=7, c=4, h=11, w=9, oc=7, stride=(2, 1), dilation=(2, 1),
         padding=((1, 2), (0, 1))),
    Case("stack-n6-groups2", n=6, c=6, h=6, w=6, oc=10, groups=2, padding=1),
    Case("stack-n9-depthwise", n=9, c=8, h=5, w=7, oc=8, groups=8, padding=1),
    Case("stack-n4-1x7", n=4, c=5, h=9, w=9, oc=33, kh=1, kw=7, padding=(0, 3)),
]
# Depthwise NCHW convolves padded channel planes, split by column phase for strides > 1, DWR
# (4) output rows and VN (16 f32 / 8 f64 on AVX-512) output columns at a time: output sizes
# around those, strides 1-3 in either direction, dilation, wide and odd kernels.
PLANE_CASES = [
    Case("plane-s2-ow18", n=1, c=5, oc=5, groups=5, h=9, w=35, stride=2, padding=1),
    Case("plane-s3-k5", n=2, c=3, oc=3, groups=3, h=13, w=40, kh=5, kw=5, stride=3,
         padding=2),
    Case("plane-s2-d2", n=1, c=4, oc=4, groups=4, h=12, w=37, stride=2, dilation=2,
         padding=2),
    Case("plane-oh5-ow33", n=1, c=2, oc=2, groups=2, h=5, w=33, padding=1),
    Case("plane-s2x1", n=1, c=3, oc=3, groups=3, h=9, w=20, stride=(2, 1), padding=1),
    Case("plane-s1x3-k2x4", n=1, c=3, oc=3, groups=3, h=6, w=40, kh=2, kw=4, stride=(1, 3),
         padding=((0, 1), (2, 1))),
    Case("plane-s2-k4-d3", n=1, c=3, oc=3, groups=3, h=14, w=31, kh=4, kw=4, stride=2,
         dilation=(1, 3), padding=((2, 0), (1, 3))),
]
# Kernels of >= 32 channels per group keep one packed weight copy and walk the strip's
# rotated slots as K runs in tap order (strip_runs): strides and dilations that rotate the
# slots by 1, 2 or more columns, groups, a 1x7 row.
RUN_CASES = [
    Case("runs-c32", n=1, c=32, oc=5, h=6, w=9, padding=1),
    Case("runs-c33-s2", n=1, c=33, oc=7, h=7, w=11, stride=2, padding=1),
    Case("runs-c40-dil-1x2", n=1, c=40, oc=3, h=8, w=12, dilation=(1, 2), padding=2),
    Case("runs-c32-k5-n2", n=2, c=32, oc=4, h=7, w=9, kh=5, kw=5, padding=2),
    Case("runs-c64-groups2", n=1, c=64, oc=6, groups=2, h=5, w=8, padding=1),
    Case("runs-c36-1x7", n=1, c=36, oc=5, h=5, w=12, kh=1, kw=7, padding=(0, 3)),
    Case("runs-c35-s2-k5-dil2", n=1, c=35, oc=9, h=12, w=17, kh=5, kw=5, stride=2,
         dilation=(2, 3), padding=3),
]
# Kernel rows that read the top or bottom padding are left out of a strip column's GEMM
# (strip_runs) where that saves 1/16 of the products and every output row keeps a kernel row
# that reads input; K runs of >= 256 values (the run-by-run GEMM, where they take effect).
# Asymmetric padding, strides, dilations, tall kernels, output rows only one kernel row
# reaches, rows no kernel row reaches (then nothing is left out), stacked images (neither).
PAD_ROW_CASES = [
    Case("padrows-c96-d3", n=1, c=96, h=9, w=7, oc=19, dilation=3, padding=3),
    Case("padrows-c90-s2-d2-asym", n=1, c=90, h=11, w=8, oc=17, stride=2, dilation=2,
         padding=((3, 1), (2, 2))),
    Case("padrows-c100-k5", n=2, c=100, h=6, w=5, oc=9, kh=5, kw=5, padding=2),
    Case("padrows-c260-7x1", n=1, c=260, h=9, w=4, oc=9, kh=7, kw=1, padding=(3, 0)),
    Case("padrows-one-row-reaches", n=1, c=90, h=2, w=3, oc=7, dilation=4, padding=4),
    Case("padrows-none-reaches-some", n=1, c=90, h=1, w=4, oc=7, padding=3),
    Case("padrows-stack-n4-d2", n=4, c=96, h=4, w=5, oc=9, dilation=2, padding=2),
    # "blocked" leaves them out from 1/32 (here 1/30), image by image, also where a thread's
    # pixels start inside the image (2 threads); runs of 192 values
    Case("padrows-c64-20x21", n=1, c=64, h=20, w=21, oc=16, padding=1),
]
EDGE_CASES = (ROW_CASES + OC_CASES + K_CASES + STACK_CASES + PLANE_CASES + RUN_CASES +
              PAD_ROW_CASES)


@pytest.mark.parametrize("method", COMPILED_METHODS)
@pytest.mark.parametrize("case", EDGE_CASES, ids=ids(EDGE_CASES))
def test_compiled_tile_edges(case, method, isa, debug_strip):
    check_compiled(case, method)


# Results of few products each and several L2 caches in size are streamed past the caches
# (full, aligned panels; the others stored as usual) unless plain stores time faster on the
# first call (the tests with store_mode force each): NHWC, and NCHW through "blocked" (W*X,
# whose rows are 64-byte aligned when OH*OW is a multiple of 16: 128x256). 3 -> 70 channels
# leaves a partial panel, float64 doubles the bytes.
STREAM_CASES = [Case("stream-3-70-130x260", n=1, c=3, h=130, w=260, oc=70, padding=1),
                Case("stream-n2-s2", n=2, c=4, h=250, w=260, oc=64, stride=(2, 1), padding=1),
                Case("stream-3-70-128x256", n=1, c=3, h=128, w=256, oc=70, padding=1),
                # 10 output rows: the lowered methods' staged rows leave out padding rows
                Case("stream-3-70-10x3400", n=1, c=3, h=10, w=3400, oc=70, padding=1)]


@pytest.mark.parametrize("method", COMPILED_METHODS)
@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_compiled_streamed_results(case, method, store_mode):
    check_compiled(case, method)        # out= at NumPy's 16-byte alignment
    for layout, dtype in itertools.product(LAYOUTS, DTYPES):   # results the package allocates
        x, w, b, ref = data(case, dtype)
        res = conv(case, x, w, b, layout, method, num_threads=2)
        assert res.ctypes.data % 64 == 0
        check_close(res, ref, case, dtype, layout, method)


@pytest.mark.parametrize("method", COMPILED_METHODS)
@pytest.mark.parametrize("case", STREAM_CASES[:2], ids=ids(STREAM_CASES[:2]))
def test_store_modes_give_the_same_bits_and_workspace(case, method, isa):
    """Streamed, stored plainly, or as the first call's timing of the two chose (the
    default): the same bits, the same workspace (the room to stream is kept), and the timed
    choice remembered per geometry, method and thread count."""
    from im2row import _api
    x, w, b, ref = data(case, np.float32)
    for layout in LAYOUTS:
        xl, wl = to_layout(x, w, layout)
        plan = im2row.Conv2d(wl, b, layout=layout, method=method, **case.kwargs)
        runs = {}
        for mode in ("streamed", "plain", None):
            previous, _api.STORE_MODE = _api.STORE_MODE, mode
            try:
                _api._STORES.clear()
                runs[mode] = plan.measure(xl, num_threads=2)
            finally:
                _api.STORE_MODE = previous
        res, info = runs["streamed"]
        check_close(res, ref, case, np.float32, layout, method)
        for mode in ("plain", None):
            np.testing.assert_array_equal(runs[mode][0], res, err_msg=f"{layout} {mode}")
            assert runs[mode][1]["workspace"] == info["workspace"], (layout, mode)
        packed = plan._packed_for(info["method"])
        spec = plan._spec(xl.shape, "Conv2d")
        geometry = _api.spec_geometry(spec)
        key = _api.wisdom_key(spec, geometry, 2) + (info["method"],)
        # NHWC streams these results (NCHW only through W*X); the choice is kept either way
        assert packed.streams(geometry, info["method"], 2) or layout == "NCHW"
        assert _api._STORES.get(key) in (True, False)


def misaligned_out(shape, dtype, offset):
    """A NaN-filled array `offset` bytes past a cache line, inside 64 sentinel bytes (255) on
    either side; returns (out, raw bytes, start)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.full(nbytes + 128, 255, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + nbytes].view(dtype).reshape(shape)
    out[...] = np.nan
    return out, raw, start


# 1x1: "im2row" and "blocked" run it as a GEMM on the input itself (no lowering); 17 MB
POINTWISE_STREAM = Case("stream-1x1-n2", n=2, c=24, h=120, w=125, oc=144, kh=1, kw=1)


@pytest.mark.parametrize("offset", [16, 32, 48])
@pytest.mark.parametrize("case", [STREAM_CASES[1], POINTWISE_STREAM], ids=lambda c: c.name)
@pytest.mark.parametrize("method", COMPILED_METHODS)
def test_compiled_streamed_results_into_misaligned_out(method, case, offset, isa, store_mode):
    """out= 16, 32 or 48 bytes past a cache line (a 16-byte aligned NumPy array): row blocks
    (lowered methods) or columns (the strip) gathered and written as runs of whole lines, the
    partial first and last lines stored (the parts of a streamed line would each be a
    read-modify-write); the same bits as into an aligned result, which is streamed straight
    from the registers."""
    for dtype in DTYPES:
        x, w, b, ref = data(case, dtype)
        aligned = conv(case, x, w, b, "NHWC", method, num_threads=2)
        out, raw, start = misaligned_out(aligned.shape, dtype, offset)
        res = conv(case, x, w, b, "NHWC", method, out=out, num_threads=2)
        assert res is out and out.ctypes.data % 64 == offset
        np.testing.assert_array_equal(res, aligned)
        assert (raw[:start] == 255).all() and (raw[start + aligned.nbytes:] == 255).all()


# Rows of the lowered A matrix a multiple of 4 KiB apart get a cache line more
# (a_row_stride): 1024 channels (4 or 8 KiB a pixel), pointwise ("blocked" NHWC copies the
# pixels; NCHW transposes them into the padded rows), strided 1x1 and a 2x2 kernel whose
# K block is 1024 values; grouped, the groups' 1024 channels start 4 KiB apart; NCHW W*X
# ("blocked", one-off pointwise) copies each block of its OIHW weight rows. Odd pixel
# counts leave partial register tiles; 40 output channels a partial panel.
ALIAS_CASES = [Case("alias-1x1-1024", n=2, c=1024, h=5, w=3, oc=40, kh=1, kw=1),
               Case("alias-1x1-s2-1024", n=1, c=1024, h=7, w=9, oc=40, kh=1, kw=1, stride=2),
               Case("alias-2x2-256", n=1, c=256, h=6, w=5, oc=40, kh=2, kw=2, padding=1),
               Case("alias-1x1-g2", n=1, c=2048, h=3, w=5, oc=40, kh=1, kw=1, groups=2),
               # NCHW W*X: weight rows 8 KiB apart, two K blocks, two M blocks
               Case("alias-1x1-2048", n=2, c=2048, h=3, w=3, oc=130, kh=1, kw=1)]


@pytest.mark.parametrize("method", COMPILED_METHODS)
@pytest.mark.parametrize("case", ALIAS_CASES, ids=ids(ALIAS_CASES))
def test_compiled_rows_padded_off_4k_strides(case, method):
    check_compiled(case, method)


# 17 MB of float32 result, streamed where L2 is up to 2 MiB. 256x256 pixels: every channel
# row at the offset of out=; 261x261 (not whole lines): each row at its own offset, so the
# results are staged and each row streamed out whole (wx_rows_out).
NCHW_STREAM_CASES = [Case("stream-3-64-256x256", n=1, c=3, h=256, w=256, oc=64, padding=1),
                     Case("stream-3-64-261x261", n=1, c=3, h=261, w=261, oc=64, padding=1)]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("offset", [4, 16, 40])
@pytest.mark.parametrize("case", NCHW_STREAM_CASES, ids=ids(NCHW_STREAM_CASES))
def test_compiled_streamed_nchw_rows_into_misaligned_out(case, offset, threads, isa,
                                                        store_mode):
    """NCHW W*X ("blocked") into an out= `offset` bytes past a cache line: each channel row's
    pixels up to its first line boundary stored, the rest streamed as whole lines. The same
    bits as into an aligned result, nothing written outside out."""
    for dtype in DTYPES:
        if offset % np.dtype(dtype).itemsize:
            continue
        x, w, b, ref = data(case, dtype)
        aligned = conv(case, x, w, b, "NCHW", "blocked", num_threads=threads)
        check_close(aligned, ref, case, dtype, "NCHW", "blocked")
        out, raw, start = misaligned_out(aligned.shape, dtype, offset)
        res = conv(case, x, w, b, "NCHW", "blocked", out=out, num_threads=threads)
        assert res is out and out.ctypes.data % 64 == offset
        np.testing.assert_array_equal(res, aligned)
        assert (raw[:start] == 255).all() and (raw[start + aligned.nbytes:] == 255).all()


# NCHW strips with fewer weight panels than threads split the output columns, parts
# starting at whole cache lines of the output rows (70 or 97 columns in 2-5 parts: some
# empty, the last the longest); a dilated kernel's columns run in chain order, not split.
COLUMN_SPLIT_CASES = [Case("cols-3-9-10x70", n=1, c=3, h=10, w=70, oc=9, padding=1),
                      Case("cols-5-20-6x97-s2", n=1, c=5, h=6, w=97, oc=20, stride=2,
                           padding=1),
                      Case("cols-4-7-9x70-d2", n=1, c=4, h=9, w=70, oc=7, dilation=2,
                           padding=2)]


@pytest.mark.parametrize("offset", [0, 16])
@pytest.mark.parametrize("case", COLUMN_SPLIT_CASES, ids=ids(COLUMN_SPLIT_CASES))
def test_compiled_nchw_strip_split_by_columns(case, offset, isa):
    """NCHW "i2r" at 1, 2, 3 and 5 threads into an out= `offset` bytes past a cache line:
    every split gives the same bits, close to the reference, nothing written outside out."""
    for dtype in DTYPES:
        x, w, b, ref = data(case, dtype)
        results = []
        for threads in (1, 2, 3, 5):
            out, raw, start = misaligned_out(out_shape(ref, "NCHW"), dtype, offset)
            res = conv(case, x, w, b, "NCHW", "i2r", out=out, num_threads=threads)
            assert res is out
            check_close(res, ref, case, dtype, "NCHW", f"i2r threads={threads}")
            assert (raw[:start] == 255).all() and (raw[start + out.nbytes:] == 255).all()
            results.append(res.copy())
        for threads, res in zip((2, 3, 5), results[1:]):
            np.testing.assert_array_equal(res, results[0], err_msg=f"{threads} threads")


# A 3-channel stem whose float32 result (17 MB) is over 8 L2 caches of 2 MiB: streamed on
# every CPU seen. Its 301 columns are not a multiple of any gather width, and split unevenly
# among 3 threads.
GATHER_CASE = Case("gather-3-64-220x301", n=1, c=3, h=220, w=301, oc=64, padding=1)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("offset", [16, 48])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_compiled_gathered_output_rows(dtype, offset, threads, isa, store_mode):
    """An unaligned NHWC out= of the strip: jb columns gathered, then written as rows of
    pixels (whole lines streamed, the partial first and last line of each row stored): the
    same bits as the aligned result, whose columns go straight to the output, the reference
    within tolerance, nothing written outside out."""
    case = GATHER_CASE
    x, w, b, ref = data(case, dtype)
    aligned = conv(case, x, w, b, "NHWC", "i2r", num_threads=threads)
    assert aligned.ctypes.data % 64 == 0
    check_close(aligned, ref, case, dtype, "NHWC", "i2r")
    out, raw, start = misaligned_out(aligned.shape, dtype, offset)
    res = conv(case, x, w, b, "NHWC", "i2r", out=out, num_threads=threads)
    assert res is out
    np.testing.assert_array_equal(res, aligned)
    assert (raw[:start] == 255).all() and (raw[start + aligned.nbytes:] == 255).all()


ONE_ORDER_CASES = [c for c in RUN_CASES + K_CASES + PAD_ROW_CASES if c.c // c.groups >= 32]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", ONE_ORDER_CASES, ids=ids(ONE_ORDER_CASES))
def test_compiled_methods_sum_in_one_order(case, layout, isa):
    """With >= 32 channels per group the compiled methods that lower im2row rows sum each
    output's products in tap order (kh, kw, c), so they agree to the bit: "i2r", "im2row" and
    "blocked" on NHWC, "i2r" and "im2row" on NCHW ("blocked" on NCHW is the W * im2col GEMM,
    in the OIHW order (c, kh, kw)): what lets "auto" choose among them without changing a
    result."""
    if not COMPILED:
        pytest.skip("compiled extension not available")
    methods = COMPILED_METHODS if layout == "NHWC" else ("i2r", "im2row")
    for dtype in DTYPES:
        x, w, b, _ = data(case, dtype)
        results = {m: conv(case, x, w, b, layout, m) for m in methods}
        for m in methods[1:]:
            np.testing.assert_array_equal(results[m], results[methods[0]],
                                          err_msg=f"{case} {layout} {m}")


@pytest.mark.parametrize("method", ("numpy", "im2col", "auto"))
@pytest.mark.parametrize("case", EDGE_CASES, ids=ids(EDGE_CASES))
def test_tile_edges_other_methods(case, method):
    if method == "auto" and not COMPILED:
        pytest.skip("compiled extension not available")
    for layout, dtype in itertools.product(LAYOUTS, DTYPES):
        x, w, b, ref = data(case, dtype)
        check_close(conv(case, x, w, b, layout, method), ref, case, dtype, layout, method)


# ---------------------------------------------------------------------------- exactness

INT_CASES = [
    Case("int-basic", c=4, oc=7, padding=1),
    Case("int-s2-asym", c=3, oc=33, h=9, w=8, stride=2, padding=((1, 0), (2, 1))),
    Case("int-dil-groups", c=4, oc=6, h=9, w=9, groups=2, dilation=(2, 3), padding=2),
    Case("int-depthwise", c=5, oc=10, groups=5, padding="same", kh=2, kw=4, stride=2),
    Case("int-1x1", c=3, oc=17, kh=1, kw=1),
    Case("int-rows29", n=1, c=2, h=31, w=3, oc=31),
]


@pytest.mark.parametrize("case", INT_CASES, ids=ids(INT_CASES))
def test_integer_valued_bit_identical(case):
    """Small integers: every partial sum is exact, so every method equals the reference."""
    for layout, dtype in itertools.product(LAYOUTS, DTYPES):
        x, w, b, ref = data(case, dtype, integer=True)
        for method in ALL_METHODS:
            res = from_layout(conv(case, x, w, b, layout, method), layout)
            np.testing.assert_array_equal(res, ref, err_msg=f"{method} {layout} {dtype}")


@pytest.mark.parametrize("case", INT_CASES, ids=ids(INT_CASES))
def test_integer_valued_compiled(case, isa, debug_strip):
    for method in COMPILED_METHODS:
        check_compiled(case, method, integer=True)


# ---------------------------------------------------------------------------- plans

PLAN_SIZES = [(1, 3, 3), (2, 6, 5), (1, 12, 9), (3, 20, 17), (2, 9, 14), (1, 4, 4),
              (2, 2, 3)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("geom", [dict(stride=1, padding=1), dict(stride=2, padding="same",
                                  dilation=(1, 2)), dict(stride=(2, 1), padding=((2, 0), (1, 1)))],
                         ids=["s1-p1", "s2-same-d1x2", "asym"])
def test_plan_reuse(geom, method, layout):
    """One plan on growing then shrinking inputs equals fresh conv2d calls."""
    rng = np.random.default_rng(7)
    for dtype in DTYPES:
        w = rng.uniform(-1, 1, (7, 4, 3, 3)).astype(dtype)
        b = rng.uniform(-1, 1, 7).astype(dtype)
        xs = [rng.uniform(-1, 1, (n, 4, h, wd)).astype(dtype) for n, h, wd in PLAN_SIZES]
        _, wl = to_layout(xs[0], w, layout)
        plan = im2row.Conv2d(wl, b, layout=layout, method=method, **geom)
        for x in xs + xs[::-1]:
            xl, _ = to_layout(x, w, layout)
            res = plan(xl)
            fresh = im2row.conv2d(xl, wl, b, layout=layout, method=method, **geom)
            np.testing.assert_array_equal(res, fresh, err_msg=f"{x.shape}")
            ref = conv2d_reference(x, w, b, **geom)
            np.testing.assert_allclose(from_layout(res, layout), ref, rtol=0,
                                       atol=tolerance(dtype, 36))
            # unbatched through the same plan
            res1 = plan(xl[0])
            np.testing.assert_array_equal(res1, res[0])


def test_plan_keeps_its_own_weights():
    rng = np.random.default_rng(3)
    w = rng.uniform(-1, 1, (3, 2, 3, 3))
    x = rng.uniform(-1, 1, (1, 2, 5, 5))
    for method in ALL_METHODS:
        w2 = w.copy()
        plan = im2row.Conv2d(w2, method=method)
        w2[...] = 0
        np.testing.assert_allclose(plan(x), conv2d_reference(x, w), rtol=0,
                                   atol=tolerance(np.float64, 18))


RELU_CASES = [Case("relu-basic", padding=1), Case("relu-groups-s2", c=4, oc=6, groups=2,
                                                     stride=2, padding=1),
              Case("relu-oc33-k2", oc=33, kh=2, kw=2, padding="same"),
              Case("relu-nobias", bias=False, dilation=2, h=9, w=9),
              Case("relu-deepK", n=1, c=60, h=5, w=5, oc=17, padding=1),
              Case("relu-padrows-c96-d2", n=1, c=96, h=6, w=5, oc=17, dilation=2, padding=2)]


def _relu_check(case, method):
    for layout, dtype in itertools.product(LAYOUTS, DTYPES):
        x, w, b, ref = data(case, dtype)
        xl, wl = to_layout(x, w, layout)
        plan = im2row.Conv2d(wl, b, layout=layout, method=method, activation="relu",
                             **case.kwargs)
        for threads in (1, 2):
            res = plan(xl, num_threads=threads)
            assert (res >= 0).all()
            check_close(res, np.maximum(ref, 0), case, dtype, layout, f"relu {method}")


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("case", RELU_CASES, ids=ids(RELU_CASES))
def test_relu(case, method):
    _relu_check(case, method)


@pytest.mark.parametrize("method", COMPILED_METHODS)
@pytest.mark.parametrize("case", RELU_CASES, ids=ids(RELU_CASES))
def test_relu_compiled(case, method, isa, debug_strip):
    _relu_check(case, method)


# ---------------------------------------------------------------------------- memory order

def _views(a):
    """name -> (a view holding the same values as `a` in another memory order, its owner)."""
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    big[tuple(slice(None, None, 2) for _ in a.shape)] = a
    strided = big[tuple(slice(None, None, 2) for _ in a.shape)]
    rev_base = np.ascontiguousarray(a[..., ::-1])
    reversed_ = rev_base[..., ::-1]
    fortran = np.asfortranarray(a)
    readonly = a.copy()
    readonly.flags.writeable = False
    if a.ndim >= 2:
        swapped = np.swapaxes(np.ascontiguousarray(np.swapaxes(a, 0, 1)), 0, 1)
    else:
        swapped = np.broadcast_to(a[:, None], (a.shape[0], 2))[:, 0]   # stride, no copy
    return {"sliced": strided, "negative-stride": reversed_, "fortran": fortran,
            "readonly": readonly, "swapped-axes": swapped}


ORDER_CASES = [Case("order-basic", c=4, oc=6, groups=2, padding=1, stride=(1, 2)),
               Case("order-unbatched", c=3, oc=5, padding="same", batched=False,
                    kh=2, kw=3)]
VIEW_NAMES = ("sliced", "negative-stride", "fortran", "readonly", "swapped-axes")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("view", VIEW_NAMES)
@pytest.mark.parametrize("case", ORDER_CASES, ids=ids(ORDER_CASES))
def test_memory_orders(case, view, layout):
    for dtype in DTYPES:
        x, w, b, ref = data(case, dtype)
        xl, wl = to_layout(x, w, layout)
        xv = _views(xl)[view]
        wv = _views(wl)[view]
        bv = _views(b)[view]
        assert np.array_equal(xv, xl) and np.array_equal(wv, wl) and np.array_equal(bv, b)
        saved = [a.copy() for a in (xv, wv, bv)]
        for method in ALL_METHODS:
            res = im2row.conv2d(xv, wv, bv, layout=layout, method=method, **case.kwargs)
            assert res.flags.c_contiguous
            check_close(res, ref, case, dtype, layout, f"{method} {view}")
            plan = im2row.Conv2d(wv, bv, layout=layout, method=method, **case.kwargs)
            np.testing.assert_array_equal(plan(xv), res)
            for a, s in zip((xv, wv, bv), saved):
                np.testing.assert_array_equal(a, s, err_msg=f"{method} modified an input")


# ---------------------------------------------------------------------------- empty inputs

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_zero_batch(method, layout):
    for dtype in DTYPES:
        x = np.zeros((0, 3, 7, 6), dtype)
        w = np.ones((5, 3, 3, 3), dtype)
        xl, wl = to_layout(x, w, layout)
        res = im2row.conv2d(xl, wl, np.ones(5, dtype), stride=2, padding=1, layout=layout,
                            method=method)
        want = (0, 5, 4, 3) if layout == "NCHW" else (0, 4, 3, 5)
        assert res.shape == want and res.dtype == dtype
        out = np.empty(want, dtype)
        assert im2row.conv2d(xl, wl, layout=layout, method=method, stride=2, padding=1,
                             out=out) is out
        plan = im2row.Conv2d(wl, layout=layout, method=method, stride=2, padding=1)
        assert plan(xl).shape == want


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_zero_out_channels(method, layout):
    x = np.ones((2, 3, 5, 5))
    w = np.ones((0, 3, 3, 3))
    xl, wl = to_layout(x, w, layout)
    res = im2row.conv2d(xl, wl, np.ones(0), padding=1, layout=layout, method=method)
    assert res.shape == ((2, 0, 5, 5) if layout == "NCHW" else (2, 5, 5, 0))


EMPTY_CASES = [Case("c0-pad1", c=0, h=4, w=5, oc=3, padding=1),
               Case("h0-pad2", h=0, w=4, oc=4, padding=2),
               Case("w0-pad-asym", h=3, w=0, oc=2, kh=2, kw=2, padding=((0, 1), (2, 1))),
               Case("c0-groups2", c=0, oc=4, groups=2, padding=1, stride=2),
               Case("c0-unbatched", c=0, oc=3, padding=1, batched=False),
               Case("h0-nobias", h=0, oc=3, padding=2, bias=False)]
assert all(valid(c) for c in EMPTY_CASES)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("case", EMPTY_CASES, ids=ids(EMPTY_CASES))
def test_empty_image_gives_bias(case, method, layout):
    """No input values: every output is a sum over an empty set (0) plus the bias."""
    for dtype in DTYPES:
        x, w, b, ref = data(case, dtype)
        assert ref.size > 0
        want = np.zeros_like(ref) + (0 if b is None else b[:, None, None])
        np.testing.assert_array_equal(ref, want)   # the reference agrees with the definition
        xl, wl = to_layout(x, w, layout)
        out = np.full(out_shape(ref, layout), np.nan, dtype)
        res = im2row.conv2d(xl, wl, b, layout=layout, method=method, out=out, **case.kwargs)
        assert res is out
        np.testing.assert_array_equal(from_layout(res, layout), want)
        if b is not None:   # ReLU after the bias
            plan = im2row.Conv2d(wl, -b, layout=layout, method=method, activation="relu",
                                 **case.kwargs)
            np.testing.assert_array_equal(from_layout(plan(xl), layout),
                                          np.maximum(-want, 0))


# Pointwise NCHW "blocked" runs W*X or the lowered GEMM by the map's size (plan.c:
# pointwise_lowered), and a one-off call always W*X: the two must give the same bits.
POINTWISE_CASES = [(1, 96, 3, 3, 80), (2, 160, 7, 7, 200), (3, 64, 5, 4, 40),
                   (1, 33, 13, 13, 65), (2, 48, 16, 14, 50)]


@needs_compiled
@pytest.mark.parametrize("n,c,h,w,oc", POINTWISE_CASES)
def test_pointwise_nchw_plan_and_one_off_bits(n, c, h, w, oc, isa):
    """Plans (lowered where the panels of pixels would fill badly) against the reference and
    bit for bit against the one-off call (W*X), NHWC, 1-3 threads, both dtypes."""
    rng = np.random.default_rng(zlib.crc32(f"{n},{c},{h},{w},{oc}".encode()))
    for dtype in DTYPES:
        x = rng.uniform(-1, 1, (n, c, h, w)).astype(dtype)
        wt = rng.uniform(-1, 1, (oc, c, 1, 1)).astype(dtype)
        b = rng.uniform(-1, 1, oc).astype(dtype)
        ref = conv2d_reference(x, wt, b)
        nhwc = im2row.conv2d(np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
                             np.ascontiguousarray(wt.transpose(2, 3, 1, 0)), b,
                             layout="NHWC", method="blocked")
        plan = im2row.Conv2d(wt, b, method="blocked")
        for threads in (1, 2, 3):
            one_off = im2row.conv2d(x, wt, b, method="blocked", num_threads=threads)
            y = np.full(ref.shape, np.nan, dtype)
            plan(x, out=y, num_threads=threads)
            np.testing.assert_allclose(y, ref, rtol=0, atol=tolerance(dtype, c))
            assert np.array_equal(y, one_off), (dtype, threads)
            assert np.array_equal(y, nhwc.transpose(0, 3, 1, 2)), (dtype, threads)


# Strip layers of 32-136 channels: K runs shorter than a K block, walked as segments by the
# microkernel (kernels.template.h: gemm_segmented); with K over KC_WHOLE (1152) the K blocks
# cut runs in two (the last three cases).
SEGMENT_CASES = [Case("seg-64-3x3", n=1, c=64, h=9, w=10, oc=40, padding=1),
                 Case("seg-48-5x5-dil2", n=2, c=48, h=11, w=9, oc=33, kh=5, kw=5, padding=3,
                      dilation=2),
                 Case("seg-40-3x3-s2", n=1, c=40, h=12, w=13, oc=70, stride=2, padding=1),
                 Case("seg-96-5x5", n=1, c=96, h=8, w=9, oc=20, kh=5, kw=5, padding=2),
                 Case("seg-136-3x3", n=2, c=136, h=7, w=8, oc=36, padding=1),
                 Case("seg-64-5x5-s2", n=1, c=64, h=11, w=12, oc=17, kh=5, kw=5, stride=2,
                      padding=2)]


@needs_compiled
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", SEGMENT_CASES, ids=ids(SEGMENT_CASES))
def test_strip_segments_match_lowered_bits(case, layout, isa):
    """The strip ("i2r") against the reference and bit for bit against "im2row" (one copy of
    the weights: the same products in the same order), 1 and 2 threads, both dtypes."""
    assert valid(case)
    for dtype in DTYPES:
        x, w, b, ref = data(case, dtype)
        xl, wl = to_layout(x, w, layout)
        lowered = im2row.conv2d(xl, wl, b, layout=layout, method="im2row", **case.kwargs)
        for threads in (1, 2):
            res = im2row.conv2d(xl, wl, b, layout=layout, method="i2r", num_threads=threads,
                                **case.kwargs)
            np.testing.assert_allclose(from_layout(res, layout), ref, rtol=0,
                                       atol=tolerance(dtype, case.c * case.kh * case.kw))
            np.testing.assert_array_equal(res, lowered, err_msg=f"{dtype} {threads}")


# ---------------------------------------------------------------------------- non-finite weights

NONFINITE_CASES = [Case("3x3-pad1", c=8, h=9, w=8, oc=5, padding=1),
                   Case("5x5-asym-s2", c=3, h=11, w=10, oc=6, kh=5, kw=5, stride=2,
                        padding=((2, 1), (0, 2))),
                   Case("3x3-d2-g2", c=8, h=8, w=9, oc=4, groups=2, dilation=2, padding=2),
                   Case("dw-3x3", c=6, h=7, w=7, oc=6, groups=6, padding=1),
                   Case("1x1-pad1", c=4, h=5, w=6, oc=3, kh=1, kw=1, padding=1),
                   Case("3x3-16ch-wide", c=16, h=32, w=31, oc=17, padding="same"),   # auto: i2r
                   Case("h0-pad2", h=0, w=4, oc=4, padding=2)]
assert all(valid(c) for c in NONFINITE_CASES)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("case", NONFINITE_CASES, ids=ids(NONFINITE_CASES))
def test_nonfinite_weights_times_padding(case, method, layout):
    """Zero padding times an Inf or NaN weight is NaN, as in the definition (the reference
    multiplies the zero-padded input): also for the methods whose kernels skip the taps that
    read padding ("i2r"'s strip, an empty image). Elsewhere Inf stays Inf."""
    for dtype in DTYPES:
        x, w, b, _ = data(case, dtype)
        w = w.copy()
        w[0, 0, 0, 0] = np.inf                                     # a corner tap
        w[-1, -1, case.kh - 1, case.kw - 1] = -np.inf              # the opposite corner
        w[min(1, case.oc - 1), 0, case.kh // 2, 0] = np.nan        # a left-column tap
        with np.errstate(invalid="ignore"):
            ref = conv2d_reference(x, w, b, **case.kwargs)
        xl, wl = to_layout(x, w, layout)
        for plan in (False, True):
            out = np.full(out_shape(ref, layout), 7.0, dtype)
            with np.errstate(invalid="ignore"):
                if plan:
                    res = im2row.Conv2d(wl, b, layout=layout, method=method,
                                        **case.kwargs)(xl, out=out)
                else:   # after a call with finite weights: the one-shot cache must not
                    # remember what the weights held
                    im2row.conv2d(xl, np.zeros_like(wl), b, layout=layout, method=method,
                                  out=out, **case.kwargs)
                    res = im2row.conv2d(xl, wl, b, layout=layout, method=method, out=out,
                                        **case.kwargs)
            got = from_layout(res, layout)
            what = f"{case} {layout} {method} plan={plan} {np.dtype(dtype).name}"
            if case.name == "3x3-16ch-wide" and method == "auto":   # the case covers auto's strip
                assert im2row.Conv2d(wl, layout=layout, **case.kwargs).measure(
                    xl)[1]["method"] == "i2r", what
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=what)
            np.testing.assert_array_equal(np.isinf(got), np.isinf(ref), err_msg=what)
            finite = np.isfinite(ref)
            np.testing.assert_array_equal(got[np.isinf(ref)], ref[np.isinf(ref)], err_msg=what)
            np.testing.assert_allclose(got[finite], ref[finite], rtol=0,
                                       atol=tolerance(dtype, case.depth), err_msg=what)
        # the fused ReLU passes NaN on, as np.maximum and torch.relu do
        with np.errstate(invalid="ignore"):
            res = im2row.Conv2d(wl, b, layout=layout, method=method, activation="relu",
                                **case.kwargs)(xl)
        got, want = from_layout(res, layout), np.maximum(ref, 0)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what} relu")
