"""The backend: which extension runs, the NumPy fallback, ISA selection, backend_info, and
workspace_bytes against what the kernels really allocate and copy."""
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import im2row
from im2row import _backend
from reference import conv2d_reference, to_nhwc, tolerance

COMPILED = _backend.native is not None
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled extension not available")


# ---------------------------------------------------------------------------- (a) the build

def test_compiled_extension_is_the_one_tested():
    """CI sets IM2ROW_EXPECT_COMPILED=1: the suite must not pass on the NumPy fallback."""
    if os.environ.get("IM2ROW_EXPECT_COMPILED") != "1":
        pytest.skip("IM2ROW_EXPECT_COMPILED is not set")
    info = im2row.backend_info()
    assert info["compiled"] is True, info["reason"]
    assert info["isa"] != "none" and info["cpu_isa"] != "none"
    assert info["reason"] is None
    import im2row._native as native
    assert _backend.native is native
    # the extension sits next to the package being tested (not some other installed copy)
    assert os.path.dirname(os.path.abspath(native.__file__)) == \
        os.path.dirname(os.path.abspath(im2row.__file__))
    # and it really computes
    x = np.ones((1, 2, 4, 4), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    for method in ("i2r", "im2row", "blocked"):
        np.testing.assert_array_equal(im2row.conv2d(x, w, method=method), 18)


# ---------------------------------------------------------------------------- (b) subprocesses

def run_python(code, **env_vars):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM2ROW_")}
    env.update(env_vars)
    prelude = f"import sys; sys.path.insert(0, {TESTS_DIR!r})\n"
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, cwd=TESTS_DIR, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


FALLBACK_CODE = """
    import json, warnings
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        import im2row
        import im2row._api, im2row._backend    # importing again must not warn again
        import numpy as np
        from reference import conv2d_reference, tolerance
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (2, 4, 7, 6))
        w = rng.uniform(-1, 1, (6, 2, 3, 3))
        b = rng.uniform(-1, 1, 6)
        ref = conv2d_reference(x, w, b, stride=2, padding=1, groups=2)
        res = {}
        for m in ("auto", "numpy", "im2col"):
            r = im2row.conv2d(x, w, b, stride=2, padding=1, groups=2, method=m)
            res[m] = float(np.abs(r - ref).max())
        xn, wn = np.moveaxis(x, 1, -1).copy(), w.transpose(2, 3, 1, 0).copy()
        r = im2row.conv2d(xn, wn, b, stride=2, padding=1, groups=2, layout="NHWC")
        res["auto-nhwc"] = float(np.abs(np.moveaxis(r, -1, 1) - ref).max())
        plan = im2row.Conv2d(w, b, stride=2, padding=1, groups=2)
        _, info = plan.measure(x)
        errors = {}
        for m in ("i2r", "im2row", "blocked"):
            try:
                im2row.conv2d(x, w, b, stride=2, padding=1, groups=2, method=m)
                errors[m] = None
            except RuntimeError as e:
                errors[m] = str(e)
            try:
                im2row.Conv2d(w, method=m)
                errors["plan-" + m] = None
            except RuntimeError as e:
                errors["plan-" + m] = str(e)
        ws = im2row.workspace_bytes(x.shape, w.shape, stride=2, padding=1, groups=2)
        try:
            im2row._backend.set_isa("generic")
            set_isa = None
        except RuntimeError as e:
            set_isa = str(e)
    warns = [(w.category.__name__, str(w.message)) for w in rec]
    print(json.dumps(dict(info=im2row.backend_info(), err=res, tol=tolerance(np.float64, 18),
                          errors=errors, warns=warns, method=info["method"],
                          ws_method=ws["method"], set_isa=set_isa,
                          native=im2row._backend.native is None)))
"""


def _check_fallback(out, reason_part):
    runtime = [m for c, m in out["warns"] if c == "RuntimeWarning"]
    assert len(runtime) == 1, out["warns"]
    assert "NumPy fallback" in runtime[0] and reason_part in runtime[0]
    assert len(out["warns"]) == 1, out["warns"]      # nothing else warned, not even later
    info = out["info"]
    assert info["compiled"] is False and info["isa"] == "none" and info["openmp"] is False
    assert reason_part in info["reason"]
    assert out["native"] is True
    for m, err in out["err"].items():
        assert err <= out["tol"], (m, err)
    assert out["method"] == "numpy" and out["ws_method"] == "numpy"
    for m in ("i2r", "im2row", "blocked"):
        for key in (m, "plan-" + m):
            msg = out["errors"][key]
            assert msg is not None, f"{key} did not raise RuntimeError"
            assert f"method={m!r} needs the compiled extension" in msg
            assert reason_part in msg
    assert out["set_isa"] is not None and reason_part in out["set_isa"]


def test_force_numpy_fallback():
    out = run_python(FALLBACK_CODE, IM2ROW_FORCE_NUMPY="1")
    _check_fallback(out, "IM2ROW_FORCE_NUMPY is set")


def test_force_numpy_zero_means_off():
    out = run_python("""
        import json, warnings
        warnings.simplefilter("error")
        import im2row
        print(json.dumps(im2row.backend_info()))
    """, IM2ROW_FORCE_NUMPY="0")
    assert out["compiled"] is COMPILED


def test_broken_extension_falls_back():
    """A real import failure of im2row._native: `import im2row` still works and says why."""
    code = "sys.modules['im2row._native'] = None   # makes `import im2row._native` fail\n" + \
        textwrap.dedent(FALLBACK_CODE)
    out = run_python(code)
    _check_fallback(out, "the compiled extension im2row._native failed to import")


ISA_CODE = """
    import json, warnings
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        import im2row
        import numpy as np
        from reference import conv2d_reference, tolerance
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (1, 5, 9, 8)).astype(np.float32)
        w = rng.uniform(-1, 1, (33, 5, 3, 3)).astype(np.float32)
        ref = conv2d_reference(x, w, padding=1)
        err = {m: float(np.abs(im2row.conv2d(x, w, padding=1, method=m) - ref).max())
               for m in ("i2r", "im2row", "blocked")}
        plan_isa = im2row.Conv2d(w, method="i2r")._packed.isa
    print(json.dumps(dict(info=im2row.backend_info(), err=err, tol=tolerance(np.float32, 45),
                          plan_isa=plan_isa, debug=im2row._backend.debug_strip,
                          warns=[(w.category.__name__, str(w.message)) for w in rec])))
"""


def _supported_isas():
    if not COMPILED:
        return []
    names = _backend.ISA_NAMES
    return list(names[:names.index(_backend.native.cpu_isa()) + 1])


@needs_compiled
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", " AVX2 "])
def test_isa_environment_variable(isa):
    want = isa.strip().lower()
    if want not in _supported_isas():
        pytest.skip(f"this CPU does not support {want}")
    out = run_python(ISA_CODE, IM2ROW_ISA=isa, IM2ROW_DEBUG_STRIP="1")
    assert out["warns"] == []
    assert out["info"]["isa"] == want and out["plan_isa"] == want
    assert out["info"]["cpu_isa"] == _backend.native.cpu_isa()
    assert out["debug"] is True
    for m, err in out["err"].items():
        assert err <= out["tol"], (m, err)


@needs_compiled
@pytest.mark.parametrize("value", ["sse9", "avx-512", "none"])
def test_isa_environment_variable_invalid(value):
    out = run_python(ISA_CODE, IM2ROW_ISA=value)
    msgs = [m for c, m in out["warns"] if c == "RuntimeWarning"]
    assert len(msgs) == 1 and f"IM2ROW_ISA={value!r} is not one of" in msgs[0], out["warns"]
    assert out["info"]["isa"] == _backend.native.cpu_isa()


@needs_compiled
def test_isa_environment_variable_above_cpu():
    above = _backend.ISA_NAMES[len(_supported_isas()):]
    if not above:
        pytest.skip("this CPU supports every level")
    out = run_python(ISA_CODE, IM2ROW_ISA=above[0])
    msgs = [m for c, m in out["warns"] if c == "RuntimeWarning"]
    assert len(msgs) == 1 and "not supported by this CPU" in msgs[0]
    assert out["info"]["isa"] == _backend.native.cpu_isa()


@needs_compiled
def test_set_isa():
    best = _backend.native.cpu_isa()
    previous = _backend.set_isa("generic")
    try:
        assert _backend.isa() == "generic" and im2row.backend_info()["isa"] == "generic"
        assert im2row.Conv2d(np.ones((2, 1, 1, 1)), method="i2r")._packed.isa == "generic"
        with pytest.raises(ValueError, match=r"set_isa: isa must be one of .*got 'mmx'"):
            _backend.set_isa("mmx")
        assert _backend.isa() == "generic"
    finally:
        assert _backend.set_isa(previous) == "generic"
    assert _backend.isa() == previous and im2row.backend_info()["cpu_isa"] == best


# ---------------------------------------------------------------------------- (c) backend_info

def test_backend_info_keys():
    info = im2row.backend_info()
    assert {"compiled", "isa", "cpu_isa", "openmp", "max_threads", "version", "reason",
            "numpy"} <= set(info)
    assert isinstance(info["compiled"], bool) and isinstance(info["openmp"], bool)
    assert isinstance(info["max_threads"], int) and info["max_threads"] >= 1
    assert info["version"] == im2row.__version__
    assert info["numpy"] == np.__version__
    try:
        assert info["version"] == importlib.metadata.version("im2row")
    except importlib.metadata.PackageNotFoundError:
        pass
    if info["compiled"]:
        assert info["isa"] in _backend.ISA_NAMES and info["cpu_isa"] in _backend.ISA_NAMES
        assert _backend.ISA_NAMES.index(info["isa"]) <= _backend.ISA_NAMES.index(
            info["cpu_isa"])
        assert info["reason"] is None
    else:
        assert info["isa"] == "none" and isinstance(info["reason"], str)


# ---------------------------------------------------------------------------- (d) workspace

WS_GEOMS = [
    dict(n=1, c=3, h=8, w=9, oc=5, k=(3, 3), padding=1),
    dict(n=2, c=16, h=12, w=10, oc=33, k=(3, 3), padding=1, stride=2),
    dict(n=3, c=4, h=7, w=7, oc=8, k=(2, 3), padding="same", dilation=(2, 1)),
    dict(n=1, c=6, h=9, w=20, oc=6, k=(3, 3), groups=3, dilation=(1, 2), stride=(1, 3)),
    dict(n=1, c=8, h=5, w=6, oc=17, k=(1, 1)),                  # NHWC im2row: direct GEMM
    dict(n=2, c=5, h=17, w=17, oc=7, k=(5, 5), padding=2),      # > 256 pixels: auto -> i2r
    dict(n=1, c=4, h=6, w=30, oc=3, k=(1, 5), dilation=(1, 2), stride=(1, 4), padding=1),
    dict(n=1, c=30, h=4, w=4, oc=40, k=(3, 3), padding=((2, 0), (0, 1))),
]
WS_IDS = ["3x3", "s2-oc33", "same-dil", "groups-dilw-s3", "1x1", "5x5-large", "1x5-d2-s4",
          "asym"]


def _ws_case(g, layout, dtype):
    rng = np.random.default_rng(0)
    kh, kw = g["k"]
    x = rng.uniform(-1, 1, (g["n"], g["c"], g["h"], g["w"])).astype(dtype)
    w = rng.uniform(-1, 1, (g["oc"], g["c"] // g.get("groups", 1), kh, kw)).astype(dtype)
    if layout == "NHWC":
        x, w = to_nhwc(x, w)
    kwargs = {k: g[k] for k in ("stride", "padding", "dilation", "groups") if k in g}
    return x, w, kwargs


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("method", ["i2r", "im2row", "blocked", "auto"])
@pytest.mark.parametrize("g", WS_GEOMS, ids=WS_IDS)
def test_workspace_bytes_matches_kernels(g, method, layout, dtype, isa):
    x, w, kwargs = _ws_case(g, layout, dtype)
    b = np.ones(g["oc"], dtype)
    plan = im2row.Conv2d(w, b, layout=layout, method=method, **kwargs)
    plan_nobias = im2row.Conv2d(w, None, layout=layout, method=method, **kwargs)
    for threads in (1, 2):
        ws = im2row.workspace_bytes(x.shape, w.shape, layout=layout, method=method,
                                    num_threads=threads, dtype=dtype, **kwargs)
        res, info = plan.measure(x, num_threads=threads)
        assert info["method"] == ws["method"]
        assert ws["method"] in ("i2r", "im2row", "blocked")
        # (info["workspace"] and ws["workspace"] come from the same C schedule, so comparing
        # them tests nothing: test_workspace_against_the_design checks the workspace against
        # formulas written from the design instead.) The copy counts do come from different
        # code: the kernels count what they copy, workspace_bytes walks the schedule.
        assert info["copied"] == ws["copied"], (threads, info, ws)
        assert 1 <= info["threads"] <= threads
        assert plan._packed.nbytes == ws["packed_weights"]
        assert plan_nobias._packed.nbytes <= ws["packed_weights"]
        _, info2 = plan_nobias.measure(x, num_threads=threads)
        assert (info2["workspace"], info2["copied"]) == (info["workspace"], info["copied"])
        # unbatched input: the same as a batch of one
        ws1 = im2row.workspace_bytes(x.shape[1:], w.shape, layout=layout, method=method,
                                     num_threads=threads, dtype=dtype, **kwargs)
        _, info1 = plan.measure(x[0], num_threads=threads)
        assert info1["copied"] == ws1["copied"]
        assert info1["workspace"] == info["workspace"] or g["n"] > 1
    assert ws["packed_weights"] >= w.size * np.dtype(dtype).itemsize


def _round64(nbytes):
    return -(-nbytes // 64) * 64


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("g", WS_GEOMS, ids=WS_IDS)
def test_workspace_against_the_design(g, dtype, isa):
    """The scratch a call reports, against what the README says each method keeps, computed
    here from the geometry alone: "i2r" (NHWC, one image) one strip per thread, the padded
    input rows x KW columns x C/groups channels; "blocked" (NHWC) one A block per thread,
    MR*8 rows of the K = KH*KW*C/groups values (K up to 1152 is not split)."""
    x, w, kwargs = _ws_case(g, "NHWC", dtype)
    x = x[:1]
    kh, kw = g["k"]
    groups = g.get("groups", 1)
    cg = g["c"] // groups
    if groups == g["c"] or (kh, kw) == (1, 1) or kh * kw * cg > 1152:
        pytest.skip("depthwise, pointwise and split-K layers keep other buffers")
    itemsize = np.dtype(dtype).itemsize
    stride, dil = kwargs.get("stride", 1), kwargs.get("dilation", 1)
    sh = stride if isinstance(stride, int) else stride[0]
    dh = dil if isinstance(dil, int) else dil[0]
    for threads in (1, 2):
        _, info = im2row.Conv2d(w, layout="NHWC", method="i2r", **kwargs).measure(
            x, num_threads=threads)
        oh = im2row.conv2d(x, w, layout="NHWC", **kwargs).shape[1]
        strip_rows = (oh - 1) * sh + (kh - 1) * dh + 1
        strip = _round64(strip_rows * kw * cg * itemsize)
        assert info["workspace"] == info["threads"] * strip, (threads, info, strip)
        _, info = im2row.Conv2d(w, layout="NHWC", method="blocked", **kwargs).measure(
            x, num_threads=threads)
        mr = {"generic": 4, "avx2": 6, "avx512": 14}[isa]   # the register tile's rows
        block = _round64(mr * 8 * kh * kw * cg * itemsize)
        assert info["workspace"] == info["threads"] * block, (threads, info, block)


@pytest.mark.parametrize("method", ["numpy", "im2col"])
def test_measure_numpy_methods(method):
    x, w, kwargs = _ws_case(WS_GEOMS[1], "NCHW", np.float32)
    res, info = im2row.Conv2d(w, method=method, **kwargs).measure(x)
    assert info == {"method": method}
    ws = im2row.workspace_bytes(x.shape, w.shape, method=method, **kwargs)
    assert ws["method"] == method and ws["packed_weights"] == 0
    assert ws["copied"] == x.shape[0] * 6 * 5 * 16 * 9 * 4      # N*OH*OW*C*KH*KW*itemsize
    assert ws["workspace"] > 0


@pytest.mark.parametrize("method", ["auto", "i2r", "im2row", "blocked", "numpy", "im2col"])
@pytest.mark.parametrize("shapes", [((0, 3, 8, 8), (8, 3, 3, 3)), ((1, 0, 4, 4), (3, 0, 3, 3)),
                                    ((1, 3, 4, 4), (0, 3, 3, 3)), ((2, 3, 0, 4), (3, 3, 3, 3))],
                         ids=["N0", "C0", "OC0", "H0"])
def test_workspace_bytes_empty_geometries(shapes, method):
    """conv2d accepts these (empty or bias-only results); workspace_bytes must describe them
    too instead of failing inside the extension."""
    if method in ("i2r", "im2row", "blocked") and not COMPILED:
        pytest.skip("compiled extension not available")
    xs, wshape = shapes
    ws = im2row.workspace_bytes(xs, wshape, padding=2, method=method)
    assert ws["copied"] >= 0
    if xs[0] == 0 or xs[1] == 0:       # no image or no channel: nothing to copy
        assert ws["copied"] == 0
    assert ws["workspace"] >= 0 and ws["packed_weights"] >= 0
    # and conv2d itself runs
    x = np.zeros(xs, np.float32)
    w = np.zeros(wshape, np.float32)
    assert im2row.conv2d(x, w, padding=2, method=method).size >= 0


# ---------------------------------------------------------------------------- (e) copies

COPY_GEOMS = [
    dict(n=1, c=16, h=12, w=11, k=(3, 3), padding=1),
    dict(n=2, c=3, h=9, w=7, k=(3, 3)),
    dict(n=1, c=8, h=6, w=10, k=(5, 5), padding=2),
    dict(n=1, c=4, h=6, w=9, k=(2, 4), padding=((1, 0), (2, 1))),
    dict(n=1, c=6, h=8, w=8, k=(3, 3), padding=1, groups=3),
    dict(n=1, c=5, h=7, w=13, k=(3, 3), padding=1, stride=(1, 2)),    # sw < KW
    dict(n=1, c=5, h=7, w=13, k=(3, 5), padding=1, stride=(1, 3)),
    dict(n=1, c=5, h=9, w=13, k=(3, 3), padding=1, stride=2),         # sh > 1: fewer rows
    dict(n=2, c=4, h=5, w=3, k=(1, 1)),
]
COPY_IDS = ["3x3-p1", "3x3-n2", "5x5", "2x4-asym", "groups3", "sw2", "1x5-sw3", "s2", "1x1"]


def i2r_copied_values(n, c, h, w, kh, kw, stride, padding, dilation=(1, 1), groups=1):
    """Values one thread writes into the strips (the design of issue 3): each image and
    group fills KW columns, then every step writes the stride_w new columns (when
    stride_w < KW); each column fill writes the input rows the output reads, Cg values each."""
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = padding
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    g0 = math.gcd(sw, dw)
    t, m = dw // g0, sw // g0             # columns j and j+t share taps, m of them new
    if m >= kw:
        fills = ow * kw
    else:
        fills = sum(kw + (len(range(r, ow, t)) - 1) * m for r in range(min(t, ow)))
    strip_rows = (oh - 1) * sh + (kh - 1) * dh + 1
    rows = max(min(pt + h, strip_rows) - pt, 0)
    return n * groups * fills * rows * (c // groups)


def _pads(p):
    if isinstance(p, int):
        return (p,) * 4
    return tuple(p[0]) + tuple(p[1])


@needs_compiled
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("g", COPY_GEOMS, ids=COPY_IDS)
def test_i2r_copies_only_new_columns(g, layout):
    for dtype in (np.float32, np.float64):
        g2 = dict(g, oc=6)
        x, w, kwargs = _ws_case(g2, layout, dtype)
        item = np.dtype(dtype).itemsize
        stride = kwargs.get("stride", 1)
        stride = (stride, stride) if isinstance(stride, int) else stride
        pads = _pads(kwargs.get("padding", 0))
        kh, kw = g["k"]
        want = i2r_copied_values(g["n"], g["c"], g["h"], g["w"], kh, kw, stride, pads,
                                 groups=g.get("groups", 1)) * item
        res, info = im2row.Conv2d(w, method="i2r", layout=layout, **kwargs).measure(
            x, num_threads=1)
        assert info["copied"] == want
        if stride == (1, 1):   # exactly the input rows times the padded width: ~ the input
            assert want == g["n"] * g["h"] * (g["w"] + pads[2] + pads[3]) * g["c"] * item
        _, full = im2row.Conv2d(w, method="im2row", layout=layout, **kwargs).measure(
            x, num_threads=1)
        oh, ow = (res.shape[2:] if layout == "NCHW" else res.shape[1:3])
        direct = layout == "NHWC" and (kh, kw) == (1, 1) and stride == (1, 1) and \
            pads == (0, 0, 0, 0)
        assert full["copied"] == (0 if direct else
                                  g["n"] * oh * ow * kh * kw * g["c"] * item)
        assert info["copied"] <= full["copied"] or direct


@needs_compiled
@pytest.mark.parametrize("dilation,stride", [((1, 2), (1, 1)), ((1, 3), (1, 2)),
                                              ((2, 2), (1, 2)), ((1, 2), (1, 4))],
                         ids=["dw2", "dw3-sw2", "dw2-sw2", "dw2-sw4"])
def test_i2r_copies_with_dilation(dilation, stride):
    x = np.random.default_rng(0).uniform(-1, 1, (1, 7, 11, 4)).astype(np.float32)   # NHWC
    w = np.ones((3, 3, 4, 5), np.float32)
    _, info = im2row.Conv2d(w, stride=stride, dilation=dilation, padding=1, layout="NHWC",
                            method="i2r").measure(x, num_threads=1)
    assert info["copied"] == 4 * i2r_copied_values(1, 4, 7, 11, 3, 3, stride, (1,) * 4,
                                                   dilation)


@needs_compiled
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_i2r_copies_much_less_than_im2row(layout):
    x, w, kwargs = _ws_case(dict(n=1, c=32, h=28, w=28, oc=32, k=(3, 3), padding=1), layout,
                            np.float32)
    _, strip = im2row.Conv2d(w, method="i2r", layout=layout, **kwargs).measure(x, num_threads=1)
    _, full = im2row.Conv2d(w, method="im2row", layout=layout, **kwargs).measure(x, num_threads=1)
    assert full["copied"] == 28 * 28 * 9 * 32 * 4
    assert strip["copied"] == 28 * 30 * 32 * 4           # H rows x padded width x C
    assert strip["copied"] * 8 < full["copied"]
    assert strip["workspace"] * 4 < full["workspace"]


@needs_compiled
@pytest.mark.parametrize("threads", [1, 2])
def test_blocked_lowers_no_padding_rows(threads):
    """"blocked" on a small map lowers for each kernel row only the output rows where it
    reads input: 3x3, padding 1, 7 output rows: kernel rows 0 and 2 reach 6 of them."""
    x, w, kwargs = _ws_case(dict(n=2, c=8, h=7, w=9, oc=5, k=(3, 3), padding=1), "NHWC",
                            np.float32)
    _, info = im2row.Conv2d(w, method="blocked", layout="NHWC", **kwargs).measure(
        x, num_threads=threads)
    assert info["copied"] == 2 * (6 + 7 + 6) * 9 * 3 * 8 * 4   # N x rows x OW x KW*C x item
    ws = im2row.workspace_bytes(x.shape, w.shape, layout="NHWC", method="blocked",
                                num_threads=threads, dtype=np.float32, **kwargs)
    assert ws["copied"] == info["copied"]


@pytest.mark.skipif(_backend.native is None, reason="compiled extension not available")
def test_auto_plan_packs_rotations_only_when_it_runs_i2r(rng):
    """An "auto" plan packs the unrotated weights only; the strip's rotated copies are packed
    on its first "i2r" call (a large feature map), and results match fresh calls."""
    w = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    plan = im2row.Conv2d(w, padding=1)
    assert not plan._packed.rotations
    small = rng.standard_normal((1, 4, 7, 7)).astype(np.float32)
    out, info = plan.measure(small)
    assert info["method"] == "blocked" and not plan._packed.rotations
    np.testing.assert_array_equal(out, im2row.conv2d(small, w, padding=1, method="blocked"))
    large = rng.standard_normal((1, 4, 56, 56)).astype(np.float32)
    out, info = plan.measure(large)
    assert info["method"] == "i2r" and plan._packed.rotations
    np.testing.assert_array_equal(out, im2row.conv2d(large, w, padding=1, method="i2r"))
    np.testing.assert_array_equal(plan(small), im2row.conv2d(small, w, padding=1,
                                                             method="blocked"))
