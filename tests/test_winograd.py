"""Winograd F(2x2, 3x3) and F(4x4, 3x3) against the float64 reference.

Winograd is not exact: the bound is relative to the output's range, eps * sqrt(Cg*9) times a
factor per tile (README, "Winograd": measured max error / range, unit-normal data, C = 3 to
1024: F(2x2) 0.1-0.3 and F(4x4) 1.7-2.9 times eps * sqrt(Cg*9), float32 and float64 alike;
the factors below leave seven to ten times that).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import im2row
from im2row import _backend
from reference import conv2d_reference, to_nhwc

pytestmark = pytest.mark.skipif(_backend.native is None, reason="compiled extension needed")

BOUND_FACTOR = {2: 2.0, 4: 32.0}
TILES = {"winograd2": 2, "winograd4": 4}


def check_winograd(res, ref, dtype, tile, depth, layout, what):
    got = np.asarray(res, np.float64)
    if layout == "NHWC":
        got = np.moveaxis(got, -1, -3)
    assert np.isfinite(got).all(), f"{what}: non-finite values (unwritten output?)"
    scale = max(np.abs(ref).max(), 1e-30)
    err = np.abs(got - ref).max() / scale
    bound = BOUND_FACTOR[tile] * np.finfo(dtype).eps * np.sqrt(depth)
    assert err <= bound, f"{what}: max error {err:.3g} of the range > bound {bound:.3g}"


def make_case(rng, n, c, h, w, oc, groups, dtype):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((oc, c // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype)
    return x, wt, b


def run_case(rng, n, c, h, w, oc, groups, padding, layout, dtype, method, relu=False,
             threads=(1, 2)):
    x, wt, b = make_case(rng, n, c, h, w, oc, groups, dtype)
    ref = conv2d_reference(x, wt, b, padding=padding, groups=groups)
    if relu:
        ref = np.maximum(ref, 0)
    xl, wl = (x, wt) if layout == "NCHW" else to_nhwc(x, wt)
    x_before = xl.copy()
    results = []
    for nt in threads:
        shape = ref.shape if layout == "NCHW" else np.moveaxis(ref, 1, -1).shape
        out = np.full(shape, np.nan, dtype)
        if relu:
            plan = im2row.Conv2d(wl, b, padding=padding, groups=groups, layout=layout,
                                 method=method, activation="relu")
            res, info = plan.measure(xl, out=out, num_threads=nt)
        else:
            res = im2row.conv2d(xl, wl, b, padding=padding, groups=groups, layout=layout,
                                method=method, out=out, num_threads=nt)
            info = im2row.Conv2d(wl, b, padding=padding, groups=groups, layout=layout,
                                 method=method).measure(xl, num_threads=nt)[1]
        assert res is out
        tile = TILES.get(method) or TILES[info["method"]]
        check_winograd(res, ref, dtype, tile, (c // groups) * 9, layout,
                       f"{method} ({info['method']}) {layout} {np.dtype(dtype).name} "
                       f"threads={nt} isa={_backend.isa()}")
        results.append(res)
    np.testing.assert_array_equal(xl, x_before)   # the input is never modified
    for r in results[1:]:   # every pixel summed alike whatever the thread count
        np.testing.assert_array_equal(r, results[0])


# (n, c, h, w, oc, groups, padding): output sizes not multiples of either tile, 1x1 and 2x2
# outputs, channel counts around the register tiles (NR 32/16 f32, 16/8 f64), groups,
# depthwise, every padding form.
CASES = [
    (1, 1, 3, 3, 1, 1, 0),          # 1x1 output
    (1, 3, 4, 4, 5, 1, 0),          # 2x2 output
    (2, 3, 7, 9, 5, 1, 1),
    (1, 17, 13, 11, 33, 1, 1),
    (3, 8, 5, 6, 40, 2, ((0, 2), (1, 0))),
    (1, 16, 10, 10, 16, 16, "same"),   # depthwise
    (2, 12, 6, 7, 12, 4, 2),
    (1, 33, 9, 8, 47, 1, "valid"),
    (1, 5, 1, 1, 7, 1, 1),          # 1x1 input, padded
    (1, 2, 2, 9, 3, 1, ((1, 1), (0, 3))),
]


@pytest.mark.parametrize("method", ["winograd2", "winograd4", "winograd"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[:6]}-p{c[6]}" for c in CASES])
def test_grid(case, method, layout, dtype, rng, isa, debug_strip):
    run_case(rng, *case, layout, dtype, method)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("method", ["winograd2", "winograd4"])
def test_relu_fused(method, layout, rng, debug_strip):
    run_case(rng, 2, 9, 8, 7, 11, 1, 1, layout, np.float32, method, relu=True)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("method", ["winograd2", "winograd4"])
def test_many_blocks_and_threads(method, layout, rng):
    """More tiles than one block holds (several blocks, a partial last one), deep channels
    (K blocks of the GEMM past 1152), and 1/2/3 threads giving the same bits."""
    run_case(rng, 2, 40, 37, 35, 70, 1, 1, layout, np.float32, method, threads=(1, 2, 3))
    run_case(rng, 1, 1200, 5, 6, 9, 1, 1, layout, np.float32, method, threads=(1, 2))


def test_float64_is_close_to_exact(rng):
    x, wt, b = make_case(rng, 1, 64, 12, 12, 32, 1, np.float64)
    ref = conv2d_reference(x, wt, b, padding=1)
    for m in ("winograd2", "winograd4"):
        res = im2row.conv2d(x, wt, b, padding=1, method=m)
        assert np.abs(res - ref).max() <= 1e-13 * np.abs(ref).max(), m


def test_tile_choice_and_auto_opt_in(rng):
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    exact = im2row.Conv2d(w, padding=1)
    assert not exact.measure(x)[1]["method"].startswith("winograd")
    np.testing.assert_array_equal(im2row.conv2d(x, w, padding=1),
                                  im2row.conv2d(x, w, padding=1, method=exact.measure(x)[1]
                                                ["method"]))
    allowed = im2row.Conv2d(w, padding=1, allow_winograd=True)
    chosen = allowed.measure(x)[1]["method"]
    assert chosen == im2row.Conv2d(w, padding=1, method="winograd").measure(x)[1]["method"]
    assert chosen in ("winograd2", "winograd4")
    np.testing.assert_array_equal(im2row.conv2d(x, w, padding=1, allow_winograd=True),
                                  im2row.conv2d(x, w, padding=1, method=chosen))
    # where Winograd does not apply or is not preferred, the opt-in changes nothing
    for wt, kw in ((rng.standard_normal((64, 64, 5, 5)).astype(np.float32), {}),
                   (w, {"stride": 2}), (w[:, :4].copy(), {})):
        xx = x[:, :wt.shape[1]]
        m = im2row.Conv2d(wt, padding=1, allow_winograd=True, **kw).measure(xx)[1]["method"]
        assert not m.startswith("winograd"), (wt.shape, kw, m)
    assert im2row.workspace_bytes(x.shape, w.shape, padding=1)["method"] != chosen
    assert im2row.workspace_bytes(x.shape, w.shape, padding=1,
                                  allow_winograd=True)["method"] == chosen


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_workspace_is_small_on_a_huge_image(layout):
    """Issue 11: <= 8 MiB at 1 thread on 1 x 64 x 2048 x 2048 (the planner's own numbers)."""
    shape = (1, 64, 2048, 2048) if layout == "NCHW" else (1, 2048, 2048, 64)
    wshape = (64, 64, 3, 3) if layout == "NCHW" else (3, 3, 64, 64)
    for m in ("winograd2", "winograd4", "winograd"):
        ws = im2row.workspace_bytes(shape, wshape, padding=1, layout=layout, method=m,
                                    num_threads=1)
        assert ws["workspace"] <= 8 << 20, (m, ws)


@pytest.mark.parametrize("method", ["winograd2", "winograd4"])
def test_measure_matches_prediction(method, rng):
    x, wt, b = make_case(rng, 2, 24, 19, 23, 40, 2, np.float32)
    for layout in ("NCHW", "NHWC"):
        xl, wl = (x, wt) if layout == "NCHW" else to_nhwc(x, wt)
        plan = im2row.Conv2d(wl, b, padding=1, groups=2, layout=layout, method=method)
        _, info = plan.measure(xl, num_threads=2)
        pred = im2row.workspace_bytes(xl.shape, wl.shape, padding=1, groups=2, layout=layout,
                                      method=method, num_threads=2)
        assert info["method"] == method and pred["method"] == method
        assert info["workspace"] == pred["workspace"] > 0
        assert info["copied"] == pred["copied"] > 0
        assert pred["packed_weights"] > 0


def test_unbatched_and_empty(rng):
    x, wt, b = make_case(rng, 1, 6, 7, 7, 5, 1, np.float32)
    ref = conv2d_reference(x, wt, b, padding=1)[0]
    res = im2row.conv2d(x[0], wt, b, padding=1, method="winograd4")
    assert res.shape == ref.shape
    assert np.abs(res - ref).max() < 1e-4
    empty = im2row.conv2d(np.zeros((0, 6, 7, 7), np.float32), wt, b, padding=1,
                          method="winograd")
    assert empty.shape == (0, 5, 7, 7)
    zero_c = im2row.conv2d(np.zeros((1, 0, 7, 7), np.float32),
                           np.zeros((5, 0, 3, 3), np.float32), b, padding=1, method="winograd")
    np.testing.assert_array_equal(zero_c, np.broadcast_to(b[None, :, None, None], zero_c.shape))


@pytest.mark.parametrize("kwargs, rule", [
    ({"stride": 2}, "stride=(2, 2)"),
    ({"dilation": (1, 2)}, "dilation=(1, 2)"),
    ({"weight_shape": (4, 3, 5, 5)}, "kernel_size=(5, 5)"),
    ({"weight_shape": (4, 3, 1, 3)}, "kernel_size=(1, 3)"),
])
@pytest.mark.parametrize("method", ["winograd", "winograd2", "winograd4"])
def test_rejects_other_geometries(method, kwargs, rule):
    kwargs = dict(kwargs)
    wshape = kwargs.pop("weight_shape", (4, 3, 3, 3))
    x = np.zeros((1, 3, 8, 8), np.float32)
    w = np.zeros(wshape, np.float32)
    for call in (lambda: im2row.conv2d(x, w, method=method, **kwargs),
                 lambda: im2row.Conv2d(w, method=method, **kwargs),
                 lambda: im2row.workspace_bytes(x.shape, w.shape, method=method, **kwargs)):
        with pytest.raises(ValueError, match="needs a 3x3 kernel with stride 1 and dilation 1"
                           ) as e:
            call()
        assert rule in str(e.value)


def test_opt_in_must_be_a_bool():
    x = np.zeros((1, 3, 8, 8), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    for call in (lambda: im2row.conv2d(x, w, allow_winograd=1),
                 lambda: im2row.Conv2d(w, allow_winograd="yes"),
                 lambda: im2row.workspace_bytes(x.shape, w.shape, allow_winograd=None)):
        with pytest.raises(TypeError, match="allow_winograd must be True or False"):
            call()


def test_ops_that_cannot_run_it_refuse_it():
    x = np.zeros((1, 3, 8, 8), np.float32)
    w = np.zeros((3, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="'winograd' is not supported here: the transposed"):
        im2row.conv_transpose2d(x, w, method="winograd")
    with pytest.raises(ValueError, match="'winograd4' is not supported here: the transposed"):
        im2row.ConvTranspose2d(w, method="winograd4")
    da = pytest.importorskip("dask.array")   # first: im2row.dask raises ImportError without
    import im2row.dask as idask              # it, which importorskip does not skip on
    with pytest.raises(ValueError, match="'winograd2' is not supported here: Winograd's"):
        idask.conv2d(da.zeros((1, 4, 8, 8), chunks=4, dtype=np.float32), w.transpose(1, 0, 2, 3),
                     method="winograd2")


def test_backward_of_a_winograd_plan_is_exact(rng):
    """The gradients of a Winograd plan come from the exact methods."""
    x, wt, _ = make_case(rng, 2, 8, 9, 9, 6, 1, np.float64)
    dy = rng.standard_normal((2, 6, 9, 9))
    got = im2row.Conv2d(wt, padding=1, method="winograd").backward(dy, x)
    want = im2row.conv2d_backward(dy, x, wt, padding=1)
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=1e-12, atol=1e-12)


CODE = """
import numpy as np, im2row, json
rng = np.random.default_rng(3)
x = rng.standard_normal((2, 19, 11, 13)).astype(np.float32)
w = rng.standard_normal((21, 19, 3, 3)).astype(np.float32)
out = {}
for m in ("winograd2", "winograd4"):
    for layout in ("NCHW", "NHWC"):
        xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wl = w if layout == "NCHW" else np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        y = im2row.conv2d(xl, wl, padding=1, layout=layout, method=m)
        if layout == "NHWC":
            y = y.transpose(0, 3, 1, 2)
        ref = im2row.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1,
                            method="numpy")
        out[m + layout] = float(np.abs(y - ref).max() / np.abs(ref).max())
print(json.dumps([im2row.backend_info()["isa"], out]))
"""


@pytest.mark.parametrize("level", ["generic", "avx2"])
def test_other_kernel_levels(level):
    """The tile transforms of every ISA level this CPU runs (IM2ROW_ISA picks one)."""
    import json
    if level not in _backend.ISA_NAMES[:_backend.ISA_NAMES.index(
            _backend.native.cpu_isa()) + 1]:
        pytest.skip(f"this CPU has no {level}")
    env = dict(os.environ, IM2ROW_ISA=level)
    res = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    isa, errs = json.loads(res.stdout.strip().splitlines()[-1])
    assert isa == level
    eps, depth = np.finfo(np.float32).eps, 19 * 9
    for key, err in errs.items():
        tile = 2 if key.startswith("winograd2") else 4
        assert err <= BOUND_FACTOR[tile] * eps * np.sqrt(depth), (level, key, err)


def test_grid_covers_both_tiles_under_winograd():
    """"winograd" picks per shape: both tiles occur in the grid above."""
    picked = set()
    for (n, c, h, w, oc, groups, padding) in CASES + [(1, 64, 28, 28, 64, 1, 1)]:
        spec_x = np.zeros((n, c, h, w), np.float32)
        wt = np.zeros((oc, c // groups, 3, 3), np.float32)
        picked.add(im2row.workspace_bytes(spec_x.shape, wt.shape, padding=padding,
                                          groups=groups, method="winograd")["method"])
    assert picked == {"winograd2", "winograd4"}, picked
