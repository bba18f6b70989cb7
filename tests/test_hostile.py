"""Hostile inputs: a catalogue of malformed arguments to every public entry point.

Every case must end in one of the outcomes the API documents, never in a crash or in another
exception type:

* ``Raises``: a ValueError or TypeError whose message matches a pattern (it names the argument
  or the rule, so a user can fix the call);
* ``Returns``: the documented result (empty arrays, bias-only results for windows that see
  only padding, a correct result for odd-but-valid values);
* ``RaisesOrReturns``: for values at the edge of what is sensible (huge strides, thread
  counts), either a ValueError/TypeError naming the argument or the correct result.

Every array argument is compared with a copy taken before the call: no case may modify an
input, and a case that raises must not have written into ``out`` (errors come before any
work). Nothing big is ever allocated: shapes whose buffers would need more than 2**63 bytes
are zero-stride views (``np.broadcast_to``) or plain tuples for ``workspace_bytes``.

The whole catalogue also runs in a child process (``python tests/test_hostile.py``), first,
so that a segmentation fault or an abort in the compiled code is reported as one failed test
with the child's return code and the case it was running, not as a dead test run.
"""
import os
import re
import signal
import subprocess
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:                       # when run as a script in the child process
    sys.path.insert(0, HERE)

import im2row  # noqa: E402
from reference import conv2d_reference  # noqa: E402

COMPILED = im2row.backend_info()["compiled"]
METHODS = ("auto", "numpy", "im2col") + (("i2r", "im2row", "blocked") if COMPILED else ())
F32, F64 = np.float32, np.float64
HUGE = (2**31, 2**63, 2**70)     # past a C int, past an int64, far past both
VE, TE, ANY = (ValueError,), (TypeError,), (ValueError, TypeError)


# ---------------------------------------------------------------------------------------------
# outcomes

class Raises:
    def __init__(self, types, pattern):
        self.types, self.pattern = types, pattern

    def __repr__(self):
        return f"raises {'/'.join(t.__name__ for t in self.types)} matching {self.pattern!r}"


class Returns:
    """The call returns; check(result) asserts what it must be."""
    def __init__(self, check, what):
        self.check, self.what = check, what

    def __repr__(self):
        return f"returns {self.what}"


class RaisesOrReturns(Raises):
    def __init__(self, types, pattern, check, what):
        super().__init__(types, pattern)
        self.check, self.what = check, what

    def __repr__(self):
        return f"{Raises.__repr__(self)} or returns {self.what}"


class Call:
    def __init__(self, fn, *args, **kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def arrays(self):
        for a in list(self.args) + list(self.kwargs.values()):
            if isinstance(a, np.ndarray):
                yield a


CASES = {}      # id -> (build() -> Call, outcome)


def case(cid, outcome, build):
    assert cid not in CASES, cid
    CASES[cid] = (build, outcome)


def run_case(cid):
    """Run one case; raise AssertionError (with the reason) unless it behaves as documented."""
    build, outcome = CASES[cid]
    call = build()
    # snapshot every real (not zero-stride, not huge) array argument
    snaps = [(a, a.copy()) for a in call.arrays() if a.size < 10**6 and _owns_memory(a)]
    try:
        result = call.fn(*call.args, **call.kwargs)
    except Exception as exc:    # noqa: BLE001  (any other type is the failure we look for)
        if not isinstance(outcome, Raises):
            raise AssertionError(f"{cid}: expected it to return {outcome.what}, but it raised "
                                 f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(exc, outcome.types):
            raise AssertionError(f"{cid}: expected {outcome!r}, got {type(exc).__name__}: "
                                 f"{exc}") from exc
        if not re.search(outcome.pattern, str(exc)):
            raise AssertionError(f"{cid}: the message {str(exc)!r} does not match "
                                 f"{outcome.pattern!r}") from exc
        for a, before in snaps:
            _assert_same(a, before, f"{cid}: an argument was modified by a call that raised")
        return
    if isinstance(outcome, Raises) and not isinstance(outcome, RaisesOrReturns):
        raise AssertionError(f"{cid}: expected {outcome!r}, but it returned "
                             f"{_short(result)}")
    out = call.kwargs.get("out")
    for a, before in snaps:
        if a is not out:
            _assert_same(a, before, f"{cid}: an input was modified")
    try:
        outcome.check(result)
    except AssertionError as exc:
        raise AssertionError(f"{cid}: returned {_short(result)}, not {outcome.what}: "
                             f"{exc}") from exc


def _owns_memory(a):
    return all(s != 0 for s in a.strides) or a.size <= 1


def _assert_same(a, before, msg):
    if not np.array_equal(a, before, equal_nan=a.dtype.kind in "fc"):
        raise AssertionError(msg)


def _short(r):
    if isinstance(r, np.ndarray):
        return f"an array of shape {r.shape} and dtype {r.dtype}"
    return repr(r)[:200]


# ---------------------------------------------------------------------------------------------
# data (fresh arrays for every case)

def X(shape=(1, 2, 5, 5), dtype=F32):
    return np.arange(np.prod(shape), dtype=F64).reshape(shape).astype(dtype) % 7 - 3


def W(shape=(3, 2, 3, 3), dtype=F32):
    return (np.arange(np.prod(shape), dtype=F64).reshape(shape) % 5 - 2).astype(dtype)


def B(n=3, dtype=F32):
    return np.arange(n, dtype=dtype) + 1


def big(shape, dtype=F32):
    """A zero-stride view of any shape numpy can index: no memory behind it."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def ref_of(x, w, b=None, **kw):
    return conv2d_reference(x, w, b, **kw)


def equals(expected, tol=1e-5):
    def check(r):
        r = np.asarray(r, F64)
        assert r.shape == expected.shape, f"shape {r.shape} != {expected.shape}"
        assert np.allclose(r, expected, rtol=tol, atol=tol), "wrong values"
    return check


def shaped(shape, fill=None):
    """Documented empty or constant (bias-only) result."""
    def check(r):
        assert isinstance(r, np.ndarray), type(r)
        assert r.shape == shape, f"shape {r.shape} != {shape}"
        if fill is not None:
            np.testing.assert_array_equal(r, np.broadcast_to(fill, shape))
    return check


def ws_dict(r):
    assert isinstance(r, dict), type(r)
    for key in ("workspace", "packed_weights", "copied"):
        assert isinstance(r[key], int) and r[key] >= 0, (key, r[key])


# ---------------------------------------------------------------------------------------------
# the catalogue

conv2d, Conv2d, workspace_bytes = im2row.conv2d, im2row.Conv2d, im2row.workspace_bytes


_DEFAULT = object()


def plan_call(w_args=(), w_kwargs=None, x=_DEFAULT, **call_kwargs):
    """Build a plan (itself part of the case) and call it."""
    def run():
        plan = Conv2d(*w_args, **(w_kwargs or {}))
        return plan(X() if x is _DEFAULT else x, **call_kwargs)
    return run


for m in METHODS:
    # --- x and weight of the wrong type, dtype or ndim -----------------------------------
    bad_arrays = {
        "list": ([[[[1.0] * 5] * 5] * 2], TE, r"x must be a numpy\.ndarray, got list"),
        "str": ("image", TE, r"x must be a numpy\.ndarray, got str"),
        "None": (None, TE, r"x must be a numpy\.ndarray, got NoneType"),
        "scalar": (F32(1), TE, r"x must be a numpy\.ndarray, got float32"),
        "bytes": (b"\0" * 200, TE, r"x must be a numpy\.ndarray, got bytes"),
        "memoryview": (memoryview(np.zeros((1, 2, 5, 5), F32)), TE,
                       r"x must be a numpy\.ndarray, got memoryview"),
        "object": (np.full((1, 2, 5, 5), 1.0, object), TE, r"x must have dtype .*got object"),
        "complex": (np.ones((1, 2, 5, 5), np.complex64), TE, r"x must have dtype .*complex64"),
        "bool": (np.ones((1, 2, 5, 5), bool), TE, r"x must have dtype .*got bool"),
        "int32": (np.ones((1, 2, 5, 5), np.int32), TE, r"x must have dtype .*got int32"),
        "int64": (np.ones((1, 2, 5, 5), np.int64), TE, r"x must have dtype .*got int64"),
        "float16": (np.ones((1, 2, 5, 5), np.float16), TE, r"x must have dtype .*float16"),
        "bigendian": (np.ones((1, 2, 5, 5), ">f4"), TE, r"x must have dtype .*>f4"),
        "str_array": (np.full((1, 2, 5, 5), "a"), TE, r"x must have dtype .*<U1"),
        "0d": (np.array(1.0, F32), VE, r"expected x with 3 or 4 dimensions, got 0"),
        "1d": (np.ones(5, F32), VE, r"expected x with 3 or 4 dimensions, got 1"),
        "2d": (np.ones((5, 5), F32), VE, r"expected x with 3 or 4 dimensions, got 2"),
        "5d": (np.ones((1, 1, 2, 5, 5), F32), VE, r"expected x with 3 or 4 dimensions, got 5"),
    }
    with warnings.catch_warnings():     # np.matrix is deprecated, and still an ndarray
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        bad_arrays["matrix"] = (np.asmatrix(np.ones((5, 5), F32)), VE,
                                r"expected x with 3 or 4 dim")
    for name, (bad, types, pat) in bad_arrays.items():
        case(f"conv2d-{m}-x-{name}", Raises(types, pat),
             lambda bad=bad, m=m: Call(conv2d, bad, W(), method=m))
        wpat = pat.replace("x must", "weight must").replace("expected x with 3 or 4",
                                                            "expected weight with 4")
        if name not in ("0d", "1d", "2d", "5d", "matrix"):
            case(f"conv2d-{m}-weight-{name}", Raises(types, wpat),
                 lambda bad=bad, m=m: Call(conv2d, X(), bad, method=m))
            case(f"plan-{m}-x-{name}", Raises(types, pat),
                 lambda bad=bad, m=m: Call(plan_call((W(),), dict(method=m), x=bad)))
            case(f"Conv2d-{m}-weight-{name}", Raises(types, wpat),
                 lambda bad=bad, m=m: Call(Conv2d, bad, method=m))
    for nd in ((2, 3, 3), (1, 3, 2, 3, 3), (3,)):
        case(f"conv2d-{m}-weight-{len(nd)}d", Raises(VE, rf"expected weight with 4 dimensions, "
                                                         rf"got {len(nd)}"),
             lambda nd=nd, m=m: Call(conv2d, X(), np.ones(nd, F32), method=m))
    case(f"conv2d-{m}-mixed-dtypes", Raises(TE, r"x and weight must have the same dtype"),
         lambda m=m: Call(conv2d, X(dtype=F64), W(), method=m))
    case(f"plan-{m}-x-float64-for-float32-plan", Raises(TE, r"same dtype, got x float64"),
         lambda m=m: Call(plan_call((W(),), dict(method=m), x=X(dtype=F64))))
    case(f"conv2d-{m}-channels-mismatch", Raises(VE, r"expected weight of shape .* for input "
                                                     r"with 4 channels"),
         lambda m=m: Call(conv2d, X((1, 4, 5, 5)), W(), method=m))
    case(f"plan-{m}-channels-mismatch", Raises(VE, r"for input with 4 channels"),
         lambda m=m: Call(plan_call((W(),), dict(method=m), x=X((1, 4, 5, 5)))))
    case(f"conv2d-{m}-nhwc-channels-mismatch", Raises(VE, r"\(KH, KW, C/groups, OC\)"),
         lambda m=m: Call(conv2d, X((1, 5, 5, 2)), W((3, 3, 3, 2)), layout="NHWC", method=m))

    # --- layout, method, activation ------------------------------------------------------
    for bad in ("nchw", "NCWH", "", None, 4, ["NCHW"], ("NCHW",)):
        case(f"conv2d-{m}-layout-{type(bad).__name__}:{bad!r}", Raises(VE, r"layout must be 'NCHW' or 'NHWC'"),
             lambda bad=bad, m=m: Call(conv2d, X(), W(), layout=bad, method=m))
        case(f"Conv2d-{m}-layout-{type(bad).__name__}:{bad!r}", Raises(VE, r"layout must be 'NCHW' or 'NHWC'"),
             lambda bad=bad, m=m: Call(Conv2d, W(), layout=bad, method=m))
    for bad in ("relu6", "ReLU", True, 0, "none"):
        case(f"Conv2d-{m}-activation-{type(bad).__name__}:{bad!r}", Raises(VE, r"activation must be None or 'relu'"),
             lambda bad=bad, m=m: Call(Conv2d, W(), activation=bad, method=m))

    # --- stride, dilation: zero, negative, non-integer, wrong length, huge ----------------
    for arg in ("stride", "dilation"):
        for bad, types, pat in [
                (0, VE, rf"{arg} must be positive, got 0"),
                (-1, VE, rf"{arg} must be positive, got -1"),
                ((1, 0), VE, rf"{arg} must be positive"),
                ((-2, 1), VE, rf"{arg} must be positive"),
                (-2**70, VE, rf"{arg} must be positive"),
                (1.5, TE, rf"{arg} must be an int, got float"),
                (2.0, TE, rf"{arg} must be an int, got float"),
                (F64(2), TE, rf"{arg} must be an int, got float64"),
                ("2", TE, rf"{arg} must be an int, got str"),
                (None, TE, rf"{arg} must be an int, got NoneType"),
                (True, TE, rf"{arg} must be an int, got bool"),
                (np.bool_(True), TE, rf"{arg} must be an int, got bool"),
                (1 + 0j, TE, rf"{arg} must be an int, got complex"),
                (np.array([1, 1]), TE, rf"{arg} must be an int, got ndarray"),
                ({}, TE, rf"{arg} must be an int, got dict"),
                ((1, 2, 3), VE, rf"{arg} must be an int or a pair of ints, got a sequence "
                                rf"of length 3"),
                ((), VE, rf"{arg} must be an int or a pair.*length 0"),
                ((1.0, 1), TE, rf"{arg} must be an int, got float"),
                (((1, 1), 1), TE, rf"{arg} must be an int, got tuple"),
        ]:
            case(f"conv2d-{m}-{arg}-{type(bad).__name__}:{bad!r}", Raises(types, pat),
                 lambda arg=arg, bad=bad, m=m: Call(conv2d, X(), W(), method=m, **{arg: bad}))
            case(f"Conv2d-{m}-{arg}-{type(bad).__name__}:{bad!r}", Raises(types, pat),
                 lambda arg=arg, bad=bad, m=m: Call(Conv2d, W(), method=m, **{arg: bad}))
        case(f"conv2d-{m}-{arg}-int64", Returns(equals(ref_of(X(), W(), stride=1)), "the "
                                                "convolution"),
             lambda arg=arg, m=m: Call(conv2d, X(), W(), method=m, **{arg: np.int64(1)}))
    # huge but valid: a stride past the input leaves one output per axis; a dilation of a
    # 1x1 kernel changes nothing. Either refuse with ValueError/TypeError or compute it.
    for big_v in HUGE:
        x1, w1 = X(), W((3, 2, 1, 1))
        case(f"conv2d-{m}-stride-huge-{big_v}",
             RaisesOrReturns(ANY, r"stride", equals(ref_of(x1, w1, stride=8)), "the 1x1 "
                             "output of the top-left window"),
             lambda big_v=big_v, m=m: Call(conv2d, X(), W((3, 2, 1, 1)), stride=big_v,
                                           method=m))
        case(f"conv2d-{m}-dilation-huge-1x1-{big_v}",
             RaisesOrReturns(ANY, r"dilation", equals(ref_of(x1, w1)), "the 1x1 convolution"),
             lambda big_v=big_v, m=m: Call(conv2d, X(), W((3, 2, 1, 1)), dilation=big_v,
                                           method=m))
        case(f"Conv2d-{m}-stride-huge-{big_v}",
             RaisesOrReturns(ANY, r"stride", equals(ref_of(x1, w1, stride=8)), "the 1x1 "
                             "output of the top-left window"),
             lambda big_v=big_v, m=m: Call(plan_call((W((3, 2, 1, 1)),),
                                                     dict(stride=big_v, method=m))))
        case(f"conv2d-{m}-dilation-huge-3x3-{big_v}",
             Raises(VE, r"dilation must be at most|dilated kernel \(\d+, \d+\) is larger than "
                        r"the padded input \(5, 5\)"),
             lambda big_v=big_v, m=m: Call(conv2d, X(), W(), dilation=big_v, method=m))

    # --- padding in every malformed form -------------------------------------------------
    for bad, types, pat in [
            (-1, VE, r"padding must be >= 0, got -1"),
            ((1, -1), VE, r"padding must be >= 0"),
            (((0, 0), (0, -1)), VE, r"padding must be >= 0"),
            (-2**70, VE, r"padding must be >= 0"),
            (1.5, TE, r"padding must be an int, got float"),
            (None, TE, r"padding must be an int, got NoneType"),
            (True, TE, r"padding must be an int, got bool"),
            ({}, TE, r"padding must be an int, got dict"),
            (np.array([1, 1]), TE, r"padding must be an int, got ndarray"),
            ((1, 2, 3), VE, r"padding must be an int, \(ph, pw\) or .*length 3"),
            ((), VE, r"padding must be an int, \(ph, pw\) or .*length 0"),
            (((1, 2, 3), 1), VE, r"padding for the height must be an int or a pair"),
            ((1, (1,)), VE, r"padding for the width must be an int or a pair"),
            (((1.0, 1), 1), TE, r"padding must be an int, got float"),
            ((1, "same"), TE, r"padding must be an int, got str"),
            ("SAME", VE, r"padding must be .*got the string 'SAME'"),
            ("full", VE, r"got the string 'full'"),
            ("", VE, r"got the string ''"),
            (2**31, VE, r"padding must be at most|would need \d+ bytes, more than a 64-bit"),
            (2**70, VE, r"padding must be at most|would need \d+ bytes, more than a 64-bit"),
            (((2**62, 0), (0, 0)), VE, r"padding must be at most|would need \d+ bytes"),
    ]:
        case(f"conv2d-{m}-padding-{type(bad).__name__}:{bad!r}", Raises(types, pat),
             lambda bad=bad, m=m: Call(conv2d, X(), W(), padding=bad, method=m))
        if "bytes" not in pat:      # a plan may check sizes only when it is called
            case(f"Conv2d-{m}-padding-{type(bad).__name__}:{bad!r}", Raises(types, pat),
                 lambda bad=bad, m=m: Call(Conv2d, W(), padding=bad, method=m))

    # --- groups --------------------------------------------------------------------------
    for bad, types, pat in [
            (0, VE, r"groups must be a positive int, got 0"),
            (-1, VE, r"groups must be a positive int, got -1"),
            (1.0, TE, r"groups must be an int, got float"),
            ("1", TE, r"groups must be an int, got str"),
            (None, TE, r"groups must be an int, got NoneType"),
            (True, TE, r"groups must be an int, got bool"),
            (3, VE, r"groups=3 must divide the 2 input channels"),
            (2**70, VE, r"groups must be at most|groups=\d+ must divide the 2 input channels"),
            (2, VE, r"expected weight of shape .* = \(\*, 1, \*, \*\)"),
    ]:
        case(f"conv2d-{m}-groups-{type(bad).__name__}:{bad!r}", Raises(types, pat),
             lambda bad=bad, m=m: Call(conv2d, X(), W(), groups=bad, method=m))
    case(f"conv2d-{m}-groups-not-dividing-oc", Raises(VE, r"groups=2 must divide the 3 output"),
         lambda m=m: Call(conv2d, X(), W((3, 1, 3, 3)), groups=2, method=m))
    case(f"Conv2d-{m}-groups-not-dividing-oc", Raises(VE, r"groups=2 must divide the 3 output"),
         lambda m=m: Call(Conv2d, W((3, 1, 3, 3)), groups=2, method=m))
    case(f"Conv2d-{m}-groups-0", Raises(VE, r"groups must be a positive int"),
         lambda m=m: Call(Conv2d, W(), groups=0, method=m))

    # --- bias ----------------------------------------------------------------------------
    for name, bad, types, pat in [
            ("list", [0.0, 0.0, 0.0], TE, r"bias must be a numpy\.ndarray, got list"),
            ("float", 0.5, TE, r"bias must be a numpy\.ndarray, got float"),
            ("str", "bias", TE, r"bias must be a numpy\.ndarray, got str"),
            ("float64", np.zeros(3, F64), TE, r"bias must have the same dtype as weight"),
            ("int", np.zeros(3, np.int64), TE, r"bias must have dtype float32 or float64"),
            ("complex", np.zeros(3, np.complex64), TE, r"bias must have dtype .*complex64"),
            ("object", np.zeros(3, object), TE, r"bias must have dtype .*object"),
            ("bool", np.zeros(3, bool), TE, r"bias must have dtype .*bool"),
            ("short", np.zeros(2, F32), VE, r"expected bias of shape \(OC,\) = \(3,\), got "
                                            r"\(2,\)"),
            ("long", np.zeros(4, F32), VE, r"expected bias of shape \(OC,\) = \(3,\)"),
            ("empty", np.zeros(0, F32), VE, r"expected bias of shape \(OC,\) = \(3,\)"),
            ("2d", np.zeros((1, 3), F32), VE, r"expected bias with 1 dimensions, got 2"),
            ("0d", np.array(0.0, F32), VE, r"expected bias with 1 dimensions, got 0"),
    ]:
        case(f"conv2d-{m}-bias-{name}", Raises(types, pat),
             lambda bad=bad, m=m: Call(conv2d, X(), W(), bad, method=m))
        case(f"Conv2d-{m}-bias-{name}", Raises(types, pat),
             lambda bad=bad, m=m: Call(Conv2d, W(), bad, method=m))

    # --- out -----------------------------------------------------------------------------
    def fortran_out():
        return np.asfortranarray(np.zeros((1, 3, 3, 3), F32))

    def strided_out():
        return np.zeros((1, 3, 3, 6), F32)[..., ::2]

    def readonly_out():
        o = np.zeros((1, 3, 3, 3), F32)
        o.flags.writeable = False
        return o

    for name, make, types, pat in [
            ("list", lambda: [[0.0]], TE, r"out must be a numpy\.ndarray or None, got list"),
            ("str", lambda: "out", TE, r"out must be a numpy\.ndarray or None, got str"),
            ("float64", lambda: np.zeros((1, 3, 3, 3), F64), TE, r"out must have dtype float32"),
            ("int", lambda: np.zeros((1, 3, 3, 3), np.int32), TE, r"out must have dtype "),
            ("object", lambda: np.zeros((1, 3, 3, 3), object), TE, r"out must have dtype "),
            ("shape", lambda: np.zeros((1, 3, 3, 4), F32), VE,
             r"expected out of shape \(1, 3, 3, 3\), got \(1, 3, 3, 4\)"),
            ("unbatched", lambda: np.zeros((3, 3, 3), F32), VE, r"expected out of shape"),
            ("flat", lambda: np.zeros(27, F32), VE, r"expected out of shape"),
            ("fortran", fortran_out, VE, r"out must be C-contiguous"),
            ("strided", strided_out, VE, r"out must be C-contiguous"),
            ("transposed", lambda: np.zeros((3, 3, 3, 1), F32).T, VE, r"C-contiguous"),
            ("readonly", readonly_out, VE, r"out must be writeable"),
            ("broadcast", lambda: big((1, 3, 3, 3)), VE, r"C-contiguous|writeable"),
    ]:
        case(f"conv2d-{m}-out-{name}", Raises(types, pat),
             lambda make=make, m=m: Call(conv2d, X(), W(), out=make(), method=m))
        case(f"plan-{m}-out-{name}", Raises(types, pat),
             lambda make=make, m=m: Call(plan_call((W(),), dict(method=m), out=make())))

    def alias_x(m):
        x = X((1, 3, 5, 5))
        return Call(conv2d, x, W((3, 3, 1, 1)), out=x, method=m)

    def alias_x_view(m):
        buf = np.zeros(200, F32)
        x = buf[:50].reshape(1, 2, 5, 5)
        x[...] = X()
        return Call(conv2d, x, W(), out=buf[40:67].reshape(1, 3, 3, 3), method=m)

    def alias_weight(m):
        w = W((3, 2, 3, 3))
        return Call(conv2d, X(), w, out=w.reshape(-1)[:27].reshape(1, 3, 3, 3), method=m)

    def alias_bias(m):
        buf = np.ones(30, F32)
        return Call(conv2d, X(), W(), buf[:3], out=buf[3:].reshape(1, 3, 3, 3), method=m)

    def alias_bias_overlap(m):
        buf = np.ones(30, F32)
        return Call(conv2d, X(), W(), buf[26:29], out=buf[:27].reshape(1, 3, 3, 3), method=m)

    def alias_plan_x(m):
        x = X((1, 3, 5, 5))
        return Call(plan_call((W((3, 3, 1, 1)),), dict(method=m), x=x, out=x))

    case(f"conv2d-{m}-out-is-x", Raises(VE, r"out must not share memory with x"),
         lambda m=m: alias_x(m))
    case(f"conv2d-{m}-out-overlaps-x", Raises(VE, r"out must not share memory with x"),
         lambda m=m: alias_x_view(m))
    case(f"plan-{m}-out-is-x", Raises(VE, r"out must not share memory with x"),
         lambda m=m: alias_plan_x(m))
    case(f"conv2d-{m}-out-overlaps-weight", Raises(VE, r"out must not share memory with weight"),
         lambda m=m: alias_weight(m))
    case(f"conv2d-{m}-out-overlaps-bias", Raises(VE, r"out must not share memory with bias"),
         lambda m=m: alias_bias_overlap(m))
    case(f"conv2d-{m}-out-next-to-bias", Returns(equals(ref_of(X(), W(), np.ones(3))),
                                                 "the convolution (no overlap)"),
         lambda m=m: alias_bias(m))

    # --- num_threads ---------------------------------------------------------------------
    for bad, types, pat in [
            (0, VE, r"num_threads must be None or >= 1, got 0"),
            (-1, VE, r"num_threads must be None or >= 1, got -1"),
            (-2**70, VE, r"num_threads must be None or >= 1"),
            (1.5, TE, r"num_threads must be an int, got float"),
            ("2", TE, r"num_threads must be an int, got str"),
            (True, TE, r"num_threads must be an int, got bool"),
            ([2], TE, r"num_threads must be an int, got list"),
    ]:
        case(f"conv2d-{m}-num_threads-{type(bad).__name__}:{bad!r}", Raises(types, pat),
             lambda bad=bad, m=m: Call(conv2d, X(), W(), num_threads=bad, method=m))
        case(f"plan-{m}-num_threads-{type(bad).__name__}:{bad!r}", Raises(types, pat),
             lambda bad=bad, m=m: Call(plan_call((W(),), dict(method=m), num_threads=bad)))
    for many in (64, 10**6) + HUGE:     # far more threads than work: clamp or refuse
        case(f"conv2d-{m}-num_threads-{many}",
             RaisesOrReturns(ANY, r"num_threads", equals(ref_of(X(), W())), "the convolution"),
             lambda many=many, m=m: Call(conv2d, X(), W(), num_threads=many, method=m))

    # --- shapes whose buffers would need more than 2**63 bytes (zero-stride views) -------
    case(f"conv2d-{m}-output-over-2**63-bytes",
         Raises(VE, r"the output would need \d+ bytes, more than a 64-bit byte count"),
         lambda m=m: Call(conv2d, big((2**20, 1, 2**20, 1)), big((2**24, 1, 1, 1)), method=m))
    case(f"conv2d-{m}-im2row-over-2**63-bytes",
         Raises(VE, r"im2row matrix would need \d+ bytes, more than a 64-bit byte count"),
         lambda m=m: Call(conv2d, big((1, 2**30, 2**15, 2**15)), big((1, 2**30, 2**10, 2**10)),
                          method=m))
    case(f"conv2d-{m}-padded-input-over-2**63-bytes",
         Raises(VE, r"would need \d+ bytes, more than a 64-bit byte count"),
         lambda m=m: Call(conv2d, big((1, 2**30, 2**15, 2**15)), big((1, 2**30, 1, 1)),
                          padding=2**17, method=m))
    case(f"conv2d-{m}-padded-input-over-2**63-bytes-float64",
         Raises(VE, r"the padded input would need \d+ bytes"),
         lambda m=m: Call(conv2d, big((1, 2**29, 2**15, 2**15), F64),
                          big((1, 2**29, 1, 1), F64), padding=((0, 2**15), (0, 0)),
                          groups=1, method=m))
    case(f"plan-{m}-output-over-2**63-bytes", Raises(VE, r"the output would need \d+ bytes"),
         lambda m=m: Call(plan_call((big((2**20, 1, 1, 1)),), dict(method=m),
                                    x=big((2**22, 1, 2**20, 1)))))
    case(f"workspace_bytes-{m}-over-2**63-bytes",
         Raises(VE, r"would need \d+ bytes, more than a 64-bit byte count"),
         lambda m=m: Call(workspace_bytes, (2**40, 2**40, 2**40, 2**40), (1, 2**40, 1, 1),
                          method=m))
    case(f"workspace_bytes-{m}-im2row-over-2**63-bytes",
         Raises(VE, r"im2row matrix would need \d+ bytes"),
         lambda m=m: Call(workspace_bytes, (1, 2**30, 2**15, 2**15), (1, 2**30, 2**10, 2**10),
                          method=m))

    # --- kernel larger than the padded input ---------------------------------------------
    case(f"conv2d-{m}-kernel-larger-than-input",
         Raises(VE, r"the dilated kernel \(3, 3\) is larger than the padded input \(2, 2\)"),
         lambda m=m: Call(conv2d, X((1, 2, 2, 2)), W(), method=m))
    case(f"conv2d-{m}-dilated-kernel-larger-than-input",
         Raises(VE, r"the dilated kernel \(7, 3\) is larger than the padded input \(5, 7\)"),
         lambda m=m: Call(conv2d, X(), W(), dilation=(3, 1), padding=(0, 1), method=m))
    case(f"conv2d-{m}-kernel-larger-one-axis",
         Raises(VE, r"the dilated kernel \(3, 3\) is larger than the padded input \(6, 2\)"),
         lambda m=m: Call(conv2d, X((1, 2, 4, 1)), W(), padding=((1, 1), (0, 1)), method=m))
    case(f"conv2d-{m}-kernel-0x3", Raises(VE, r"the kernel must be at least 1x1"),
         lambda m=m: Call(conv2d, X(), W((3, 2, 0, 3)), method=m))
    case(f"conv2d-{m}-kernel-3x0-nhwc", Raises(VE, r"the kernel must be at least 1x1"),
         lambda m=m: Call(conv2d, X((1, 5, 5, 2)), W((3, 0, 2, 3)), layout="NHWC", method=m))
    case(f"conv2d-{m}-kernel-larger-zero-height",
         Raises(VE, r"the dilated kernel \(3, 3\) is larger than the padded input \(2, 7\)"),
         lambda m=m: Call(conv2d, X((1, 2, 0, 5)), W(), padding=1, method=m))

    # --- zero-size dimensions: the documented empty and bias-only results ----------------
    case(f"conv2d-{m}-N=0", Returns(shaped((0, 3, 3, 3)), "an empty (0, 3, 3, 3) result"),
         lambda m=m: Call(conv2d, X((0, 2, 5, 5)), W(), B(), method=m))
    case(f"conv2d-{m}-N=0-nhwc", Returns(shaped((0, 3, 3, 3)), "an empty (0, 3, 3, 3)"),
         lambda m=m: Call(conv2d, X((0, 5, 5, 2)), W((3, 3, 2, 3)), layout="NHWC", method=m))
    case(f"conv2d-{m}-OC=0", Returns(shaped((1, 0, 3, 3)), "an empty (1, 0, 3, 3) result"),
         lambda m=m: Call(conv2d, X(), W((0, 2, 3, 3)), B(0), method=m))
    case(f"conv2d-{m}-C=0", Returns(shaped((1, 3, 3, 3), B()[:, None, None]), "the bias"),
         lambda m=m: Call(conv2d, X((1, 0, 5, 5)), W((3, 0, 3, 3)), B(), method=m))
    case(f"conv2d-{m}-C=0-groups", Returns(shaped((1, 4, 3, 3), 0.0), "zeros"),
         lambda m=m: Call(conv2d, X((1, 0, 5, 5)), W((4, 0, 3, 3)), groups=2, method=m))
    case(f"conv2d-{m}-C=0-unbatched-nhwc", Returns(shaped((3, 3, 3), B()), "the bias"),
         lambda m=m: Call(conv2d, X((5, 5, 0)), W((3, 3, 0, 3)), B(), layout="NHWC",
                          method=m))
    case(f"conv2d-{m}-H=0-padded", Returns(shaped((1, 3, 2, 7), B()[:, None, None]),
                                           "the bias (windows see only padding)"),
         lambda m=m: Call(conv2d, X((1, 2, 0, 5)), W((3, 2, 1, 1)), B(), padding=1, method=m))
    case(f"conv2d-{m}-W=0-padded-nhwc", Returns(shaped((1, 4, 2, 3), B()), "the bias"),
         lambda m=m: Call(conv2d, X((1, 4, 0, 2)), W((1, 1, 2, 3)), B(), padding=(0, 1),
                          layout="NHWC", method=m))
    case(f"conv2d-{m}-N=0-out", Returns(shaped((0, 3, 3, 3)), "the empty out"),
         lambda m=m: Call(conv2d, X((0, 2, 5, 5)), W(), out=np.zeros((0, 3, 3, 3), F32),
                          method=m))
    case(f"Conv2d-{m}-C=0-relu", Returns(shaped((1, 3, 3, 3), np.array([0.0, 0.0, 1.0])[
        :, None, None]), "relu(bias)"),
         lambda m=m: Call(plan_call((W((3, 0, 3, 3)), B() - 2), dict(method=m,
                                                                  activation="relu"),
                                    x=X((1, 0, 5, 5)))))
    for shape in ((0, 2, 5, 5), (1, 0, 5, 5), (1, 2, 0, 5), (1, 2, 5, 0)):
        wshape = (3, shape[1], 1, 1)
        case(f"workspace_bytes-{m}-zero-size-input-{shape}", Returns(ws_dict, "a dict of "
                                                                      "byte counts"),
             lambda shape=shape, wshape=wshape, m=m: Call(workspace_bytes, shape, wshape,
                                                          padding=1, method=m))
    case(f"workspace_bytes-{m}-OC=0", Returns(ws_dict, "a dict of byte counts"),
         lambda m=m: Call(workspace_bytes, (1, 2, 5, 5), (0, 2, 3, 3), method=m))

    # --- workspace_bytes with malformed shapes -------------------------------------------
    for name, shape, types, pat in [
            ("3-entry-weight", (3, 2, 3), VE, r"weight_shape must have 4 entries"),
            ("2-entry-input", (5, 5), VE, r"input_shape must have 3 or 4 entries"),
            ("None", None, ANY, r"input_shape"),
            ("str", "1255", ANY, r"input_shape"),
            ("negative", (1, 2, -5, 5), VE, r"input_shape"),
            ("float", (1, 2, 5.5, 5), TE, r"input_shape"),
    ]:
        if name == "3-entry-weight":
            build = (lambda shape=shape, m=m: Call(workspace_bytes, (1, 2, 5, 5), shape,
                                                   method=m))
        else:
            build = (lambda shape=shape, m=m: Call(workspace_bytes, shape, (3, 2, 3, 3),
                                                   padding=10, method=m))
        case(f"workspace_bytes-{m}-{name}", Raises(types, pat), build)
    case(f"workspace_bytes-{m}-dtype-int", Raises(TE, r"dtype must be float32 or float64"),
         lambda m=m: Call(workspace_bytes, (1, 2, 5, 5), (3, 2, 3, 3), method=m,
                          dtype=np.int32))
    case(f"workspace_bytes-{m}-stride-0", Raises(VE, r"stride must be positive"),
         lambda m=m: Call(workspace_bytes, (1, 2, 5, 5), (3, 2, 3, 3), stride=0, method=m))
    case(f"workspace_bytes-{m}-num_threads-0", Raises(VE, r"num_threads must be None or >= 1"),
         lambda m=m: Call(workspace_bytes, (1, 2, 5, 5), (3, 2, 3, 3), num_threads=0,
                          method=m))
    for big_v in HUGE:
        case(f"workspace_bytes-{m}-num_threads-{big_v}",
             RaisesOrReturns(ANY, r"num_threads", ws_dict, "a dict of byte counts"),
             lambda big_v=big_v, m=m: Call(workspace_bytes, (1, 2, 5, 5), (3, 2, 3, 3),
                                           num_threads=big_v, method=m))
        case(f"workspace_bytes-{m}-stride-{big_v}",
             RaisesOrReturns(ANY, r"stride", ws_dict, "a dict of byte counts"),
             lambda big_v=big_v, m=m: Call(workspace_bytes, (1, 2, 5, 5), (3, 2, 1, 1),
                                           stride=big_v, method=m))

    # --- valid odd inputs that must simply work ------------------------------------------
    def readonly_x(m):
        x = X()
        x.flags.writeable = False
        return Call(conv2d, x, W(), method=m)

    def misaligned_x(m):
        raw = np.zeros(X().nbytes + 1, np.uint8)
        x = np.ndarray((1, 2, 5, 5), F32, buffer=raw, offset=1)
        x[...] = X()
        return Call(conv2d, x, W(), method=m)

    def misaligned_out(m):
        raw = np.zeros(27 * 4 + 1, np.uint8)
        return Call(conv2d, X(), W(), out=np.ndarray((1, 3, 3, 3), F32, buffer=raw, offset=1),
                    method=m)

    conv = Returns(equals(ref_of(X(), W())), "the convolution")
    case(f"conv2d-{m}-readonly-x", conv, lambda m=m: readonly_x(m))
    case(f"conv2d-{m}-broadcast-x", Returns(equals(ref_of(np.ones((1, 2, 5, 5)), W())),
                                            "the convolution"),
         lambda m=m: Call(conv2d, np.broadcast_to(F32(1), (1, 2, 5, 5)), W(), method=m))
    case(f"conv2d-{m}-misaligned-x", conv, lambda m=m: misaligned_x(m))
    case(f"conv2d-{m}-misaligned-out", conv, lambda m=m: misaligned_out(m))
    case(f"conv2d-{m}-negative-strides-x", conv,
         lambda m=m: Call(conv2d, np.ascontiguousarray(X()[:, ::-1, ::-1])[:, ::-1, ::-1],
                          W(), method=m))

# the lowering functions (NumPy only)
for fn in (im2row.im2row, im2row.im2col):
    name = fn.__name__
    case(f"{name}-x-list", Raises(TE, r"x must be a numpy\.ndarray, got list"),
         lambda fn=fn: Call(fn, [[1.0]], 2))
    case(f"{name}-x-int", Raises(TE, r"x must have dtype .*int64"),
         lambda fn=fn: Call(fn, np.ones((2, 5, 5), np.int64), 2))
    case(f"{name}-x-2d", Raises(VE, r"expected x with 3 or 4 dimensions"),
         lambda fn=fn: Call(fn, np.ones((5, 5), F32), 2))
    case(f"{name}-kernel-0", Raises(VE, r"kernel_size must be positive"),
         lambda fn=fn: Call(fn, X(), 0))
    case(f"{name}-kernel-float", Raises(TE, r"kernel_size must be an int, got float"),
         lambda fn=fn: Call(fn, X(), 2.5))
    case(f"{name}-kernel-None", Raises(TE, r"kernel_size must be an int, got NoneType"),
         lambda fn=fn: Call(fn, X(), None))
    case(f"{name}-kernel-too-big", Raises(VE, r"larger than the padded input"),
         lambda fn=fn: Call(fn, X(), 7))
    case(f"{name}-stride-0", Raises(VE, r"stride must be positive"),
         lambda fn=fn: Call(fn, X(), 2, stride=0))
    case(f"{name}-padding-negative", Raises(VE, r"padding must be >= 0"),
         lambda fn=fn: Call(fn, X(), 2, padding=-1))
    case(f"{name}-layout", Raises(VE, r"layout must be"),
         lambda fn=fn: Call(fn, X(), 2, layout="CHW"))
    case(f"{name}-over-2**63-bytes", Raises(VE, r"would need \d+ bytes"),
         lambda fn=fn: Call(fn, big((1, 2**30, 2**15, 2**15)), 2**10))
    k = (1, 9, 0) if name == "im2row" else (1, 0, 9)
    case(f"{name}-C=0", Returns(shaped(k), f"an empty {k} matrix"),
         lambda fn=fn: Call(fn, X((1, 0, 5, 5)), 3))
    k = (1, 14, 2) if name == "im2row" else (1, 2, 14)
    case(f"{name}-H=0-padded", Returns(shaped(k, 0.0), "zeros (only padding)"),
         lambda fn=fn: Call(fn, X((1, 2, 0, 5)), 1, padding=1))
    k = (0, 9, 18) if name == "im2row" else (0, 18, 9)
    case(f"{name}-N=0", Returns(shaped(k), f"an empty {k} matrix"),
         lambda fn=fn: Call(fn, X((0, 2, 5, 5)), 3))


# ---------------------------------------------------------------------------------------------
# the tests

import pytest  # noqa: E402

CHILD_ENV = "IM2ROW_HOSTILE_CHILD"


@pytest.mark.skipif(os.environ.get(CHILD_ENV) == "1", reason="already in the child")
def test_catalogue_in_a_subprocess():
    """The whole catalogue in a child process: a crash (SIGSEGV, SIGABRT, a sanitizer report)
    fails this test with the return code and the case that was running."""
    env = dict(os.environ, **{CHILD_ENV: "1"})
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = proc.stdout.splitlines()
    running = [ln[len("RUNNING "):] for ln in lines if ln.startswith("RUNNING ")]
    if proc.returncode < 0 or proc.returncode not in (0, 1):
        sig = -proc.returncode
        name = signal.Signals(sig).name if proc.returncode < 0 and sig in signal.valid_signals() \
            else f"exit status {proc.returncode}"
        pytest.fail(f"the catalogue child died ({name}) while running case "
                    f"{running[-1] if running else '?'}\n--- stderr tail ---\n"
                    f"{proc.stderr[-4000:]}")
    report = re.search(r"\d+:\d+: runtime error:|ERROR: AddressSanitizer|"
                       r"SUMMARY: (Address|UndefinedBehavior)Sanitizer", proc.stderr)
    assert not report, (f"a sanitizer report in the child (while running "
                        f"{running[-1] if running else '?'}):\n{proc.stderr[-4000:]}")
    failures = [ln for ln in lines if ln.startswith("FAIL ")]
    assert proc.returncode == 0 and not failures, (
        f"{len(failures)} of {len(CASES)} cases failed in the child:\n" + "\n".join(failures))
    assert f"PASSED {len(CASES)}" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("cid", list(CASES))
def test_hostile(cid):
    run_case(cid)


def test_catalogue_covers_every_method():
    for m in METHODS:
        assert sum(c.startswith(f"conv2d-{m}-") for c in CASES) > 100, m


def main():
    """The child's entry point: run every case, one line per failure, exit 1 on any."""
    failed = 0
    for cid in CASES:
        print(f"RUNNING {cid}", flush=True)
        try:
            run_case(cid)
        except Exception as exc:    # noqa: BLE001  (a broken case is a failure too)
            failed += 1
            print(f"FAIL {cid}: {str(exc).splitlines()[0][:300]}", flush=True)
    print(f"{'FAILED' if failed else 'PASSED'} {len(CASES) - failed} of {len(CASES)}"
          if failed else f"PASSED {len(CASES)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
