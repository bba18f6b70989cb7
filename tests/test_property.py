"""Property tests: hypothesis draws whole convolutions and compares them with the float64
reference (tests/reference.py).

Every drawn case is small (a few thousand multiply-adds up to a few hundred thousand), but the
draws cover every argument form: N, C, H, W, OC, KH, KW, stride, padding (int, pair, pair of
pairs, "valid", "same"), dilation, groups, bias, layout, dtype, method, num_threads, batched or
unbatched input, the input's memory order (C, Fortran, strided, reversed), a caller-supplied
``out`` and, for the compiled methods, the kernel level (ISA).

Budget: ``IM2ROW_FUZZ_EXAMPLES`` (default 200) is the number of examples of all property tests
together; each test gets a fixed share of it. CI uses the default; run e.g.
``IM2ROW_FUZZ_EXAMPLES=20000 pytest tests/test_property.py`` for a long local search.

Determinism: the tests run with ``derandomize=True`` (and no example database), so every run
of a given version of this file, hypothesis and Python draws the same examples. A CI failure is
therefore reproducible by rerunning the same command, and CI never fails at random on a new
example; the long local runs above are where new examples come from. To explore fresh random
examples instead, set ``IM2ROW_FUZZ_RANDOM=1``.
"""
import contextlib
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import im2row  # noqa: E402
from im2row import _backend  # noqa: E402
from reference import conv2d_reference, pad_amounts, tolerance  # noqa: E402

COMPILED = im2row.backend_info()["compiled"]
COMPILED_METHODS = ("i2r", "im2row", "blocked")
METHODS = ("numpy", "im2col", "auto") + (COMPILED_METHODS if COMPILED else ())
ISAS = (list(_backend.ISA_NAMES[:_backend.ISA_NAMES.index(_backend.native.cpu_isa()) + 1])
        if COMPILED else [None])
DTYPES = (np.float32, np.float64)

FUZZ_EXAMPLES = int(os.environ.get("IM2ROW_FUZZ_EXAMPLES", "200"))
RANDOM = os.environ.get("IM2ROW_FUZZ_RANDOM", "") not in ("", "0")
MAX_MACS = 400_000      # multiply-adds of one drawn case (keeps the reference fast)


def fuzz_settings(share):
    """Settings of one property test: `share` of the IM2ROW_FUZZ_EXAMPLES budget."""
    return settings(max_examples=max(3, round(FUZZ_EXAMPLES * share)), deadline=None,
                    derandomize=not RANDOM, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------------
# strategies

def _pair_form(draw, lo, hi):
    """An int or a (tuple or list) pair of ints in [lo, hi] -> (the argument, (a, b))."""
    if draw(st.booleans()):
        v = draw(st.integers(lo, hi))
        return v, (v, v)
    a, b = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
    return draw(st.sampled_from([(a, b), [a, b]])), (a, b)


@st.composite
def geometries(draw):
    """Weight geometry and the hyper-parameters of one convolution (no input size)."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    # channel counts around the register tiles' edges (NR = 8, 16 or 32 columns) and, rarely,
    # a deep K (Cg*KH*KW > 256 crosses the K blocking)
    cg = draw(st.sampled_from([1, 2, 3, 4, 1, 5, 8, 30]))
    ocg = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33]))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride_arg, stride = _pair_form(draw, 1, 3)
    dilation_arg, dilation = _pair_form(draw, 1, 3)
    form = draw(st.sampled_from(["int", "pair", "pairs", "valid", "same"]))
    if form == "int":
        padding = draw(st.integers(0, 3))
    elif form == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
        if draw(st.booleans()):
            padding = [list(p) for p in padding]
    else:
        padding = form
    return dict(groups=groups, c=groups * cg, oc=groups * ocg, kh=kh, kw=kw,
                stride_arg=stride_arg, stride=stride, dilation_arg=dilation_arg,
                dilation=dilation, padding=padding)


def _static_pads(padding):
    """(top, bottom, left, right) for every form but "same" (which depends on the size)."""
    if padding == "same":
        return (0, 0, 0, 0)
    if isinstance(padding, list):
        padding = tuple(tuple(p) for p in padding)
    return pad_amounts(0, 0, 1, 1, (1, 1), padding, (1, 1))


def input_sizes(geom):
    """(H, W) with the dilated kernel inside the padded input ("same" always fits)."""
    pt, pb, pl, pr = _static_pads(geom["padding"])
    ekh = (geom["kh"] - 1) * geom["dilation"][0] + 1
    ekw = (geom["kw"] - 1) * geom["dilation"][1] + 1
    extra = st.one_of(st.integers(0, 8), st.sampled_from([13, 20, 33]))   # rarely, tall/wide
    return st.tuples(extra.map(lambda e: max(1, ekh - pt - pb) + e),
                     extra.map(lambda e: max(1, ekw - pl - pr) + e))


def out_hw(geom, h, w):
    pt, pb, pl, pr = pad_amounts(h, w, geom["kh"], geom["kw"], geom["stride"],
                                 _norm_padding(geom["padding"]), geom["dilation"])
    oh = (h + pt + pb - (geom["kh"] - 1) * geom["dilation"][0] - 1) // geom["stride"][0] + 1
    ow = (w + pl + pr - (geom["kw"] - 1) * geom["dilation"][1] - 1) // geom["stride"][1] + 1
    return oh, ow


def _norm_padding(padding):
    return tuple(tuple(p) for p in padding) if isinstance(padding, list) else padding


def macs(geom, n, h, w):
    oh, ow = out_hw(geom, h, w)
    return n * geom["oc"] * oh * ow * (geom["c"] // geom["groups"]) * geom["kh"] * geom["kw"]


@st.composite
def conv_cases(draw, methods=METHODS):
    """A whole convolution call: geometry, sizes, options and a data seed."""
    geom = draw(geometries())
    h, w = draw(input_sizes(geom))
    n = draw(st.sampled_from([1, 2]))
    assume(macs(geom, n, h, w) <= MAX_MACS)
    method = draw(st.sampled_from(methods))
    return dict(
        geom=geom, n=n, h=h, w=w, method=method,
        batched=n > 1 or draw(st.booleans()),
        layout=draw(st.sampled_from(["NCHW", "NHWC"])),
        dtype=draw(st.sampled_from(DTYPES)),
        bias=draw(st.booleans()),
        num_threads=draw(st.sampled_from([1, 2])),
        isa=draw(st.sampled_from(ISAS)) if method in COMPILED_METHODS + ("auto",) else None,
        order=draw(st.sampled_from(["C", "F", "strided", "reversed"])),
        use_out=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


# ---------------------------------------------------------------------------------------------
# running a case

@contextlib.contextmanager
def kernel_state(isa, debug_strip=True):
    """Plans made inside use `isa`; scratch starts as NaN (a read of an unwritten value, or a
    padding value that was never zeroed, then shows as NaN in the result)."""
    prev_debug = _backend.debug_strip
    prev_isa = _backend.set_isa(isa) if (isa and COMPILED) else None
    _backend.debug_strip = debug_strip
    try:
        yield
    finally:
        _backend.debug_strip = prev_debug
        if prev_isa is not None:
            _backend.set_isa(prev_isa)


def make_data(case, kind="float"):
    """NCHW float64 x (N, C, H, W), OIHW weight and bias (or None)."""
    g, rng = case["geom"], np.random.default_rng(case["seed"])
    xs = (case["n"], g["c"], case["h"], case["w"])
    ws = (g["oc"], g["c"] // g["groups"], g["kh"], g["kw"])
    if kind == "int":
        x = rng.integers(-8, 9, xs).astype(np.float64)
        weight = rng.integers(-8, 9, ws).astype(np.float64)
        bias = rng.integers(-8, 9, g["oc"]).astype(np.float64)
    elif kind == "nonzero":     # |w| in [0.5, 1]: an Inf times a weight is never NaN
        x = rng.uniform(-1, 1, xs)
        weight = rng.uniform(0.5, 1, ws) * rng.choice([-1.0, 1.0], ws)
        bias = rng.uniform(-1, 1, g["oc"])
    else:
        x = rng.uniform(-1, 1, xs)
        weight = rng.uniform(-1, 1, ws)
        bias = rng.uniform(-1, 1, g["oc"])
    return x, weight, (bias if case["bias"] else None)


def arrange(a, order):
    """The same values in another memory order (the API accepts any)."""
    if order == "F":
        return np.asfortranarray(a)
    if order == "strided":
        big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if order == "reversed":
        rev = np.ascontiguousarray(a[..., ::-1])
        return rev[..., ::-1]
    return np.ascontiguousarray(a)


def to_layout(x, weight, layout, batched):
    """NCHW/OIHW float64 test data -> the arrays the API takes for `layout`."""
    if layout == "NHWC":
        x, weight = np.moveaxis(x, 1, -1), weight.transpose(2, 3, 1, 0)
    return (x if batched else x[0]), np.ascontiguousarray(weight)


def from_layout(y, layout, batched):
    """A result -> float64 NCHW (N, OC, OH, OW)."""
    y = np.asarray(y, np.float64)
    if not batched:
        y = y[None]
    return np.moveaxis(y, -1, 1) if layout == "NHWC" else y


def call(case, x, weight, bias, num_threads=None, method=None):
    """Run conv2d on NCHW float64 data as `case` says; returns the result as float64 NCHW.
    Also checks that no argument was modified and that `out` (if given) is the result."""
    g, dtype, layout = case["geom"], case["dtype"], case["layout"]
    xl, wl = to_layout(x, weight, layout, case["batched"])
    xl = arrange(xl.astype(dtype), case["order"])
    wl = wl.astype(dtype)
    bl = None if bias is None else bias.astype(dtype)
    copies = [a.copy() for a in (xl, wl, bl) if a is not None]
    kwargs = dict(stride=g["stride_arg"], padding=g["padding"], dilation=g["dilation_arg"],
                  groups=g["groups"], layout=layout, method=method or case["method"],
                  num_threads=num_threads or case["num_threads"])
    out = None
    if case["use_out"]:     # pre-filled with NaN: every element must be written
        oh, ow = out_hw(g, case["h"], case["w"])
        shape = ((case["n"], g["oc"], oh, ow) if layout == "NCHW"
                 else (case["n"], oh, ow, g["oc"]))
        out = np.full(shape if case["batched"] else shape[1:], np.nan, dtype)
    with kernel_state(case["isa"]):
        y = im2row.conv2d(xl, wl, bl, out=out, **kwargs)
    for before, after in zip(copies, [a for a in (xl, wl, bl) if a is not None]):
        np.testing.assert_array_equal(before, after, err_msg="an input was modified")
    assert y.dtype == dtype
    if out is not None:
        assert y is out
    return from_layout(y, layout, case["batched"])


def reference(case, x, weight, bias):
    g = case["geom"]
    return conv2d_reference(x, weight, bias, g["stride"], _norm_padding(g["padding"]),
                            g["dilation"], g["groups"])


def depth(case):
    g = case["geom"]
    return g["c"] // g["groups"] * g["kh"] * g["kw"]


def describe(case):
    g = case["geom"]
    return (f"x NCHW ({case['n']}, {g['c']}, {case['h']}, {case['w']}) weight ({g['oc']}, "
            f"{g['c'] // g['groups']}, {g['kh']}, {g['kw']}) stride={g['stride_arg']!r} "
            f"padding={g['padding']!r} dilation={g['dilation_arg']!r} groups={g['groups']} "
            f"{case['layout']} {np.dtype(case['dtype'])} method={case['method']} "
            f"threads={case['num_threads']} isa={case['isa']} batched={case['batched']} "
            f"order={case['order']} out={case['use_out']} bias={case['bias']}")


# ---------------------------------------------------------------------------------------------
# the properties

@fuzz_settings(0.45)
@given(conv_cases())
def test_matches_float64_reference(case):
    """Random unit-scale data: every method within the dtype's tolerance of the reference,
    no NaN from scratch or padding, and the compiled methods bit-identical across thread
    counts."""
    x, weight, bias = make_data(case)
    got = call(case, x, weight, bias)
    ref = reference(case, x, weight, bias)
    assert got.shape == ref.shape, describe(case)
    assert np.isfinite(got).all(), f"non-finite values from finite data: {describe(case)}"
    tol = tolerance(case["dtype"], depth(case))
    err = np.abs(got - ref).max() if got.size else 0.0
    assert err <= tol, f"max |error| {err:.3g} > {tol:.3g}: {describe(case)}"
    if case["method"] in COMPILED_METHODS + ("auto",) and COMPILED:
        other = call(case, x, weight, bias, num_threads=3 - case["num_threads"])
        np.testing.assert_array_equal(got, other, err_msg="results differ between 1 and 2 "
                                      f"threads: {describe(case)}")


@fuzz_settings(0.2)
@given(conv_cases(), st.sampled_from([1, 2]))
def test_integer_data_is_exact(case, other_threads):
    """|x|, |w|, |bias| <= 8 integers: every partial sum is exact in float32, so every method
    and thread count must give exactly the reference's values."""
    x, weight, bias = make_data(case, "int")
    ref = reference(case, x, weight, bias)
    got = call(case, x, weight, bias)
    np.testing.assert_array_equal(got, ref, err_msg=describe(case))
    got2 = call(case, x, weight, bias, num_threads=other_threads)
    np.testing.assert_array_equal(got2, ref, err_msg=f"threads={other_threads}: "
                                                     f"{describe(case)}")


def _reach_mask(case, pixel):
    """Outputs whose window contains input pixel (n, c, h, w): the reference on an indicator
    image with all-ones weights is positive exactly there (in the pixel's group)."""
    g = case["geom"]
    ind = np.zeros((case["n"], g["c"], case["h"], case["w"]))
    ind[pixel] = 1.0
    ones = np.ones((g["oc"], g["c"] // g["groups"], g["kh"], g["kw"]))
    return reference(case, ind, ones, None) > 0, ind


@st.composite
def special_cases(draw):
    case = draw(conv_cases())
    g = case["geom"]
    pixel = (draw(st.integers(0, case["n"] - 1)), draw(st.integers(0, g["c"] - 1)),
             draw(st.integers(0, case["h"] - 1)), draw(st.integers(0, case["w"] - 1)))
    value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return case, pixel, value


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # NumPy's
@fuzz_settings(0.2)
@given(special_cases())
def test_nan_and_inf_reach_exactly_their_windows(args):
    """A NaN (or +-Inf) at one input pixel reaches exactly the outputs whose window contains
    it, as in a plain sum of products; every other output is finite and correct (padding and
    scratch never introduce NaN). Weights are nonzero, so Inf*w is +-Inf with the sign of w."""
    case, pixel, value = args
    x, weight, bias = make_data(case, "nonzero")
    mask, ind = _reach_mask(case, pixel)
    xs = x.copy()
    xs[pixel] = value
    got = call(case, xs, weight, bias)
    where = f"{value} at {pixel}: {describe(case)}"
    if np.isnan(value):
        np.testing.assert_array_equal(np.isnan(got), mask, err_msg=f"NaN mask, {where}")
    else:
        # sign of the one tap that sees the pixel: the reference on the indicator with sign(w)
        sign = np.sign(value) * reference(case, ind, np.sign(weight), None)   # +-1 or 0
        expected = np.where(mask, np.copysign(np.inf, sign), 0.0)
        assert not np.isnan(got).any(), f"NaN from an Inf, {where}"
        np.testing.assert_array_equal(np.where(np.isinf(got), got, 0.0), expected,
                                      err_msg=f"Inf mask, {where}")
    x0 = x.copy()
    x0[pixel] = 0.0
    ref = reference(case, x0, weight, bias)
    err = np.abs(got[~mask] - ref[~mask]).max() if (~mask).any() else 0.0
    assert err <= tolerance(case["dtype"], depth(case)), f"max |error| {err:.3g}, {where}"


@st.composite
def plan_cases(draw):
    """A plan (weight geometry and options) and a sequence of inputs of growing and shrinking
    size, in both batched and unbatched form."""
    geom = draw(geometries())
    sizes = draw(st.lists(st.tuples(st.sampled_from([1, 2, 3]), input_sizes(geom),
                                    st.booleans()), min_size=3, max_size=5))
    assume(all(macs(geom, n, h, w) <= MAX_MACS for n, (h, w), _ in sizes))
    method = draw(st.sampled_from(METHODS))
    return dict(
        geom=geom, sizes=sizes, method=method,
        layout=draw(st.sampled_from(["NCHW", "NHWC"])),
        dtype=draw(st.sampled_from(DTYPES)), bias=draw(st.booleans()),
        activation=draw(st.sampled_from([None, "relu"])),
        num_threads=draw(st.sampled_from([1, 2])),
        isa=draw(st.sampled_from(ISAS)) if method in COMPILED_METHODS + ("auto",) else None,
        seed=draw(st.integers(0, 2**32 - 1)))


@fuzz_settings(0.15)
@given(plan_cases())
def test_plan_reused_across_sizes_equals_fresh_calls(pc):
    """One Conv2d called on inputs that grow and shrink (N, H, W, batched or not) gives
    exactly what a fresh plan gives for each input, and matches the reference."""
    g, dtype, layout = pc["geom"], pc["dtype"], pc["layout"]
    rng = np.random.default_rng(pc["seed"])
    weight = rng.uniform(-1, 1, (g["oc"], g["c"] // g["groups"], g["kh"], g["kw"]))
    bias = rng.uniform(-1, 1, g["oc"]) if pc["bias"] else None
    wl = to_layout(np.zeros((1, g["c"], 1, 1)), weight, layout, True)[1].astype(dtype)
    bl = None if bias is None else bias.astype(dtype)
    kwargs = dict(stride=g["stride_arg"], padding=g["padding"], dilation=g["dilation_arg"],
                  groups=g["groups"], layout=layout, method=pc["method"],
                  activation=pc["activation"])
    with kernel_state(pc["isa"]):
        plan = im2row.Conv2d(wl, bl, **kwargs)
        for n, (h, w), batched in pc["sizes"]:
            batched = batched or n > 1
            x = rng.uniform(-1, 1, (n, g["c"], h, w))
            xl = to_layout(x, weight, layout, batched)[0].astype(dtype)
            got = plan(xl, num_threads=pc["num_threads"])
            fresh = im2row.Conv2d(wl, bl, **kwargs)(xl, num_threads=pc["num_threads"])
            what = (f"plan {kwargs} {np.dtype(dtype)} isa={pc['isa']} on x {xl.shape}, "
                    f"sizes {pc['sizes']}")
            np.testing.assert_array_equal(got, fresh, err_msg=what)
            out = np.full_like(fresh, np.nan)
            assert plan(xl, out=out, num_threads=pc["num_threads"]) is out
            np.testing.assert_array_equal(out, fresh, err_msg="out=: " + what)
            ref = conv2d_reference(x, weight, bias, g["stride"], _norm_padding(g["padding"]),
                                   g["dilation"], g["groups"])
            if pc["activation"] == "relu":
                ref = np.maximum(ref, 0)
            err = np.abs(from_layout(got, layout, batched) - ref).max()
            assert err <= tolerance(dtype, g["c"] // g["groups"] * g["kh"] * g["kw"]), what
