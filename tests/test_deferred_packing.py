"""One-off NHWC calls on few pixels pack their weights inside the GEMM (I2R_PACK_DEFERRED):
each K block of the panels is packed from the caller's HWIO weights just before its row
blocks use it, and with several threads the output channels are split instead of the rows.

Checked here against the float64 reference and, bit for bit, against a plan (weights packed
up front) with the same method: every output element sums the same products in the same
order either way. The shapes reach the paths that matter: zero columns past OC in the last
panel, several panel blocks (deferred_panels < panels), several K blocks (K > 1152, with the
next block prefetched), several row blocks (forced through the native flag), groups, bias,
fused ReLU, 1x1 (the GEMM on the input itself) and every kernel level.
"""
import numpy as np
import pytest

import im2row
from im2row import _backend
from im2row._api import make_spec, spec_geometry
from reference import conv2d_reference, to_nhwc, tolerance
from conftest import COMPILED

needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled extension not available")

# (N, C, H, W, OC, K, stride, padding, groups): at most 64 output pixels, two row blocks of
# the smallest register tile (4 rows, generic), so conv2d defers on every kernel level
CASES = [
    (1, 16, 7, 7, 33, 3, 1, 1, 1),      # one panel block, zero columns in the last panel
    (1, 64, 7, 7, 300, 3, 1, 1, 1),     # K = 576: several panel blocks
    (1, 160, 5, 6, 40, 3, 1, 1, 1),     # K = 1440: several K blocks, prefetch
    (2, 24, 9, 9, 70, 3, 2, 1, 1),      # a batch, stride 2
    (1, 12, 8, 8, 36, 3, 1, 1, 3),      # groups, 64 pixels
    (1, 96, 7, 7, 130, 1, 1, 0, 1),     # 1x1: the input itself is the im2row matrix
    (3, 8, 4, 5, 17, 2, 1, "same", 1),  # tiny, "same" padding
]
IDS = ["oc33", "panel-blocks", "k-blocks", "batch-s2", "groups", "1x1", "tiny-same"]


def _case(n, c, h, w, oc, k, groups, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, c, h, w)).astype(dtype)
    wt = rng.uniform(-1, 1, (oc, c // groups, k, k)).astype(dtype)
    b = rng.uniform(-1, 1, oc).astype(dtype)
    return x, wt, b


def _flags(x_shape, w_shape, dtype, stride, padding, groups, method):
    spec = make_spec(x_shape, w_shape, np.dtype(dtype), stride, padding, 1, groups, "NHWC",
                     "test")
    return _backend.native.pack_flags(spec_geometry(spec), method, _backend.isa(),
                                      np.dtype(dtype).itemsize == 8), spec


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("method", ["auto", "im2row", "blocked"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_one_shot_matches_reference_and_plan_bits(case, method, dtype, isa):
    n, c, h, w, oc, k, stride, padding, groups = case
    x, wt, b = _case(n, c, h, w, oc, k, groups, dtype)
    xh, wh = to_nhwc(x, wt)
    x_before, w_before = xh.copy(), wh.copy()
    m = "blocked" if method == "auto" else method
    (_, _, deferred), _ = _flags(xh.shape, wh.shape, dtype, stride, padding, groups, m)
    assert deferred   # these shapes are what the planner defers
    ref = conv2d_reference(x, wt, b, stride=stride, padding=padding, groups=groups)
    ref = np.moveaxis(ref, 1, -1)
    plan = im2row.Conv2d(wh, b, stride=stride, padding=padding, groups=groups, layout="NHWC",
                         method=method)
    for threads in (1, 2, 3):
        y = im2row.conv2d(xh, wh, b, stride=stride, padding=padding, groups=groups,
                          layout="NHWC", method=method, num_threads=threads)
        np.testing.assert_allclose(y, ref, rtol=0, atol=tolerance(dtype, c // groups * k * k))
        assert np.array_equal(y, plan(xh, num_threads=threads)), threads
    assert np.array_equal(xh, x_before) and np.array_equal(wh, w_before)


def _native_run(xh, wh, b, spec, method, threads, deferred, relu=False, debug_nan=False):
    native = _backend.native
    packed = native.PackedWeights(wh, "NHWC", spec.groups, b, spec.stride, spec.dilation,
                                  False, relu, _backend.isa(), False, threads, deferred)
    y = np.full(spec.out_shape, np.nan, xh.dtype)
    ws, copied, used = packed.run(xh, y, spec_geometry(spec), method, threads, debug_nan)
    return y, ws, copied, packed


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("method", ["im2row", "blocked"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(40, 30, 45), (64, 12, 600)], ids=["30x30", "oc600"])
def test_many_row_blocks_with_nan_scratch(shape, method, threads, dtype, isa):
    """Deferred packing forced on 30x30 = 900 pixels (several row blocks: each K block of the
    panels is used by every row block) and on 600 output channels (several panel blocks, for
    each of which "blocked" lowers its A blocks again), scratch NaN-filled, fused ReLU: the
    same bits as packed weights, and the workspace and copies the kernels report are the
    prediction."""
    c, hw, oc = shape
    x, wt, b = _case(1, c, hw, hw, oc, 3, 1, dtype, seed=1)
    xh, wh = to_nhwc(x, wt)
    spec = make_spec(xh.shape, wh.shape, np.dtype(dtype), 1, 1, 1, 1, "NHWC", "test")
    geometry = spec_geometry(spec)
    y_def, ws_def, copied_def, packed = _native_run(xh, wh, b, spec, method, threads, True,
                                                    relu=True, debug_nan=True)
    y_pan, _, copied_pan, _ = _native_run(xh, wh, b, spec, method, threads, False, relu=True)
    assert not np.isnan(y_def).any()
    assert np.array_equal(y_def, y_pan)
    ref = np.maximum(np.moveaxis(conv2d_reference(x, wt, b, padding=1), 1, -1), 0)
    np.testing.assert_allclose(y_def, ref, rtol=0, atol=tolerance(dtype, c * 9))
    f64 = np.dtype(dtype).itemsize == 8
    predicted = _backend.native.predict(geometry, method, threads, _backend.isa(), f64, False,
                                        True, True)
    assert (ws_def, packed.nbytes, copied_def) == predicted
    assert copied_def >= copied_pan   # "blocked" may lower again per panel block
    # deferred weights hold no panels: only the padded bias
    assert packed.nbytes < wh.nbytes


@needs_compiled
def test_strip_refuses_deferred_weights():
    """The strip would repack every column: the C executor refuses (a Python caller never
    asks; conv2d defers only for the lowered methods)."""
    x, wt, b = _case(1, 8, 6, 6, 8, 3, 1, np.float32)
    xh, wh = to_nhwc(x, wt)
    spec = make_spec(xh.shape, wh.shape, np.dtype(np.float32), 1, 1, 1, 1, "NHWC", "test")
    (rotations, _, deferred), _ = _flags(xh.shape, wh.shape, np.float32, 1, 1, 1, "i2r")
    assert rotations and not deferred
    with pytest.raises(RuntimeError, match="internal error"):
        _native_run(xh, wh, b, spec, "i2r", 1, True)


@needs_compiled
def test_deferral_stops_where_packing_pays():
    """Many pixels (28x28 = 784, past two row blocks) pack first; NCHW never defers (its
    OIHW weights have no contiguous output-channel rows)."""
    (_, _, deferred), _ = _flags((1, 28, 28, 64), (3, 3, 64, 64), np.float32, 1, 1, 1,
                                 "blocked")
    assert not deferred
    spec = make_spec((1, 64, 7, 7), (64, 64, 3, 3), np.dtype(np.float32), 1, 1, 1, 1, "NCHW",
                     "test")
    assert not _backend.native.pack_flags(spec_geometry(spec), "im2row", _backend.isa(),
                                          False)[2]
