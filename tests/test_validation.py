"""Every error the public API raises: ValueError for values and shapes, TypeError for types,
with messages that name the function, the argument, the rule and the value given; raised
before anything is written."""
import math
import re

import numpy as np
import pytest

import im2row
from im2row import _backend
from im2row._args import make_spec

F32, F64 = np.float32, np.float64
X = np.ones((2, 3, 8, 8), F32)            # NCHW
W = np.ones((8, 3, 3, 3), F32)            # OIHW
B = np.ones(8, F32)
XN = np.ones((2, 8, 8, 3), F32)           # NHWC
WN = np.ones((3, 3, 3, 8), F32)           # HWIO
OUT_SHAPE = (2, 8, 6, 6)


def conv(**kw):
    args = dict(x=X, weight=W)
    args.update(kw)
    x, w = args.pop("x"), args.pop("weight")
    return im2row.conv2d(x, w, **args)


def plan_call(x=X, out=None, num_threads=None, **kw):
    args = dict(weight=W)
    args.update(kw)
    return im2row.Conv2d(args.pop("weight"), **args)(x, out=out, num_threads=num_threads)


def out_over(kind):
    """(buffer, x, weight, bias, out): a valid-looking `out` overlapping x, weight or bias, all
    carved out of one buffer laid out as x | weight | bias | spare."""
    n = int(np.prod(OUT_SHAPE))
    buf = np.zeros(X.size + W.size + B.size + n, F32)
    x = buf[:X.size].reshape(X.shape)
    w = buf[X.size:X.size + W.size].reshape(W.shape)
    b = buf[X.size + W.size:X.size + W.size + B.size]
    start = {"x": 10, "weight": X.size + 5, "bias": X.size + W.size + 3}[kind]
    return buf, x, w, b, buf[start:start + n].reshape(OUT_SHAPE)


def huge(shape, dtype=F32):
    """A zero-stride view: any shape, no memory."""
    return np.broadcast_to(np.zeros((1,) * len(shape), dtype), shape)


# (id, call, exception, regex). The regexes are anchored on the function name.
E = re.escape
CONV2D_ERRORS = [
    # types of the arrays
    ("x-list", lambda: conv(x=X.tolist()), TypeError,
     r"conv2d: x must be a numpy.ndarray, got list; convert it with numpy.asarray"),
    ("weight-list", lambda: conv(weight=W.tolist()), TypeError,
     r"conv2d: weight must be a numpy.ndarray, got list"),
    ("x-scalar", lambda: conv(x=1.0), TypeError, r"conv2d: x must be a numpy.ndarray, got float"),
    ("x-int64", lambda: conv(x=X.astype(np.int64)), TypeError,
     r"conv2d: x must have dtype float32 or float64, got int64; convert it with "
     r"x.astype\(numpy.float32\)"),
    ("x-float16", lambda: conv(x=X.astype(np.float16)), TypeError,
     r"conv2d: x must have dtype float32 or float64, got float16"),
    ("x-complex", lambda: conv(x=X.astype(np.complex64)), TypeError,
     r"conv2d: x must have dtype float32 or float64, got complex64"),
    ("x-object", lambda: conv(x=X.astype(object)), TypeError,
     r"conv2d: x must have dtype float32 or float64, got object"),
    ("x-bool", lambda: conv(x=X.astype(bool)), TypeError,
     r"conv2d: x must have dtype float32 or float64, got bool"),
    ("weight-int32", lambda: conv(weight=W.astype(np.int32)), TypeError,
     r"conv2d: weight must have dtype float32 or float64, got int32"),
    ("weight-float16", lambda: conv(weight=W.astype(np.float16)), TypeError,
     r"conv2d: weight must have dtype float32 or float64, got float16"),
    ("mixed-dtypes", lambda: conv(weight=W.astype(F64)), TypeError,
     r"conv2d: x and weight must have the same dtype, got x float32 and weight float64; "
     r"cast one with .astype\(\)"),
    ("mixed-dtypes-2", lambda: conv(x=X.astype(F64)), TypeError,
     r"conv2d: x and weight must have the same dtype, got x float64 and weight float32"),
    # ndim
    ("x-2d", lambda: conv(x=X[0, 0]), ValueError,
     E("conv2d: expected x with 3 or 4 dimensions, got 2 dimensions with shape (8, 8)")),
    ("x-5d", lambda: conv(x=X[None]), ValueError,
     E("conv2d: expected x with 3 or 4 dimensions, got 5 dimensions with shape (1, 2, 3, 8, 8)")),
    ("weight-3d", lambda: conv(weight=W[0]), ValueError,
     E("conv2d: expected weight with 4 dimensions, got 3 dimensions with shape (3, 3, 3)")),
    ("weight-5d", lambda: conv(weight=W[None]), ValueError,
     r"conv2d: expected weight with 4 dimensions, got 5 dimensions"),
    # channels and groups
    ("channel-mismatch", lambda: conv(weight=np.ones((8, 4, 3, 3), F32)), ValueError,
     E("conv2d: expected weight of shape (OC, C/groups, KH, KW) = (*, 3, *, *) for input with "
       "3 channels and groups=1, but got weight of shape (8, 4, 3, 3)")),
    ("channel-mismatch-nhwc", lambda: conv(x=XN, weight=np.ones((3, 3, 2, 8), F32),
                                           layout="NHWC"), ValueError,
     E("conv2d: expected weight of shape (KH, KW, C/groups, OC) = (*, *, 3, *) for input with "
       "3 channels and groups=1, but got weight of shape (3, 3, 2, 8)")),
    ("channel-mismatch-groups", lambda: conv(x=np.ones((1, 4, 8, 8), F32),
                                             weight=np.ones((8, 4, 3, 3), F32), groups=2),
     ValueError, E("(*, 2, *, *) for input with 4 channels and groups=2, but got weight of "
                   "shape (8, 4, 3, 3)")),
    ("groups-0", lambda: conv(groups=0), ValueError,
     r"conv2d: groups must be a positive int, got 0"),
    ("groups-negative", lambda: conv(groups=-3), ValueError,
     r"conv2d: groups must be a positive int, got -3"),
    ("groups-bool", lambda: conv(groups=True), TypeError,
     r"conv2d: groups must be an int, got bool True"),
    ("groups-float", lambda: conv(groups=1.0), TypeError,
     r"conv2d: groups must be an int, got float 1.0"),
    ("groups-str", lambda: conv(groups="1"), TypeError,
     r"conv2d: groups must be an int, got str '1'"),
    ("groups-none", lambda: conv(groups=None), TypeError,
     r"conv2d: groups must be an int, got NoneType None"),
    ("groups-not-dividing-c", lambda: conv(groups=2, weight=np.ones((8, 1, 3, 3), F32)),
     ValueError, r"conv2d: groups=2 must divide the 3 input channels"),
    ("groups-not-dividing-oc", lambda: conv(x=np.ones((1, 4, 8, 8), F32),
                                            weight=np.ones((6, 1, 3, 3), F32), groups=4),
     ValueError, E("conv2d: groups=4 must divide the 6 output channels of weight with shape "
                   "(6, 1, 3, 3)")),
    # stride, dilation
    ("stride-0", lambda: conv(stride=0), ValueError, r"conv2d: stride must be positive, got 0"),
    ("stride-negative", lambda: conv(stride=-1), ValueError,
     r"conv2d: stride must be positive, got -1"),
    ("stride-pair-0", lambda: conv(stride=(1, 0)), ValueError,
     E("conv2d: stride must be positive, got (1, 0)")),
    ("stride-bool", lambda: conv(stride=True), TypeError,
     r"conv2d: stride must be an int, got bool True"),
    ("stride-pair-bool", lambda: conv(stride=(1, False)), TypeError,
     r"conv2d: stride must be an int, got bool False"),
    ("stride-numpy-bool", lambda: conv(stride=np.bool_(True)), TypeError,
     r"conv2d: stride must be an int, got bool"),
    ("stride-float", lambda: conv(stride=2.0), TypeError,
     r"conv2d: stride must be an int, got float 2.0"),
    ("stride-pair-float", lambda: conv(stride=(1, 1.5)), TypeError,
     r"conv2d: stride must be an int, got float 1.5"),
    ("stride-len3", lambda: conv(stride=(1, 1, 1)), ValueError,
     E("conv2d: stride must be an int or a pair of ints, got a sequence of length 3: (1, 1, 1)")),
    ("stride-len1", lambda: conv(stride=[2]), ValueError,
     E("conv2d: stride must be an int or a pair of ints, got a sequence of length 1: [2]")),
    ("stride-str", lambda: conv(stride="2"), TypeError, r"conv2d: stride must be an int, got str"),
    ("stride-ndarray", lambda: conv(stride=np.array([1, 2])), TypeError,
     r"conv2d: stride must be an int, got ndarray"),
    ("dilation-0", lambda: conv(dilation=0), ValueError,
     r"conv2d: dilation must be positive, got 0"),
    ("dilation-pair-negative", lambda: conv(dilation=(-2, 1)), ValueError,
     E("conv2d: dilation must be positive, got (-2, 1)")),
    ("dilation-bool", lambda: conv(dilation=False), TypeError,
     r"conv2d: dilation must be an int, got bool False"),
    ("dilation-float", lambda: conv(dilation=1.0), TypeError,
     r"conv2d: dilation must be an int, got float 1.0"),
    ("dilation-len3", lambda: conv(dilation=(1, 1, 1)), ValueError,
     r"conv2d: dilation must be an int or a pair of ints, got a sequence of length 3"),
    # padding
    ("padding-negative", lambda: conv(padding=-1), ValueError,
     r"conv2d: padding must be >= 0, got -1"),
    ("padding-pair-negative", lambda: conv(padding=(0, -1)), ValueError,
     E("conv2d: padding must be >= 0, got (0, -1)")),
    ("padding-pairs-negative", lambda: conv(padding=((0, 1), (-2, 0))), ValueError,
     E("conv2d: padding must be >= 0, got ((0, 1), (-2, 0))")),
    ("padding-string", lambda: conv(padding="full"), ValueError,
     E("conv2d: padding must be an int, a pair, a pair of pairs, 'valid' or 'same', got the "
       "string 'full'")),
    ("padding-upper-same", lambda: conv(padding="SAME"), ValueError,
     r"got the string 'SAME'"),
    ("padding-len3", lambda: conv(padding=(1, 1, 1)), ValueError,
     E("conv2d: padding must be an int, (ph, pw) or ((top, bottom), (left, right)), got a "
       "sequence of length 3: (1, 1, 1)")),
    ("padding-len4", lambda: conv(padding=(1, 1, 1, 1)), ValueError,
     r"conv2d: padding must be an int, \(ph, pw\) or .*got a sequence of length 4"),
    ("padding-inner-len3", lambda: conv(padding=((1, 2, 3), (0, 0))), ValueError,
     E("conv2d: padding for the height must be an int or a pair (before, after), got "
       "(1, 2, 3)")),
    ("padding-inner-len1", lambda: conv(padding=(0, (1,))), ValueError,
     E("conv2d: padding for the width must be an int or a pair (before, after), got (1,)")),
    ("padding-float", lambda: conv(padding=1.0), TypeError,
     r"conv2d: padding must be an int, got float 1.0"),
    ("padding-bool", lambda: conv(padding=True), TypeError,
     r"conv2d: padding must be an int, got bool True"),
    ("padding-none", lambda: conv(padding=None), TypeError,
     r"conv2d: padding must be an int, got NoneType None"),
    ("padding-pair-float", lambda: conv(padding=((0, 1.5), (0, 0))), TypeError,
     r"conv2d: padding must be an int, got float 1.5"),
    # geometry
    ("kernel-too-large", lambda: conv(dilation=4), ValueError,
     E("conv2d: the dilated kernel (9, 9) is larger than the padded input (8, 8)")),
    ("kernel-too-large-padded", lambda: conv(weight=np.ones((8, 3, 11, 3), F32), padding=1),
     ValueError, E("conv2d: the dilated kernel (11, 3) is larger than the padded input (10, 10)")),
    ("kernel-too-large-w", lambda: conv(x=np.ones((1, 3, 8, 1), F32), padding=((0, 0), (1, 0))),
     ValueError, E("conv2d: the dilated kernel (3, 3) is larger than the padded input (8, 2)")),
    ("kernel-0x3", lambda: conv(weight=np.ones((8, 3, 0, 3), F32)), ValueError,
     E("conv2d: the kernel must be at least 1x1, got weight of shape (8, 3, 0, 3)")),
    # bias
    ("bias-list", lambda: conv(bias=[0.0] * 8), TypeError,
     r"conv2d: bias must be a numpy.ndarray, got list"),
    ("bias-float", lambda: conv(bias=0.5), TypeError,
     r"conv2d: bias must be a numpy.ndarray, got float"),
    ("bias-int", lambda: conv(bias=np.zeros(8, np.int64)), TypeError,
     r"conv2d: bias must have dtype float32 or float64, got int64"),
    ("bias-dtype-mismatch", lambda: conv(bias=np.zeros(8, F64)), TypeError,
     E("conv2d: bias must have the same dtype as weight (float32), got float64; cast it with "
       "bias.astype(numpy.float32)")),
    ("bias-shape", lambda: conv(bias=np.zeros(7, F32)), ValueError,
     E("conv2d: expected bias of shape (OC,) = (8,), got (7,)")),
    ("bias-2d", lambda: conv(bias=np.zeros((1, 8), F32)), ValueError,
     E("conv2d: expected bias with 1 dimensions, got 2 dimensions with shape (1, 8)")),
    ("bias-0d", lambda: conv(bias=np.zeros((), F32)), ValueError,
     r"conv2d: expected bias with 1 dimensions, got 0 dimensions"),
    # layout, method, threads
    ("layout-unknown", lambda: conv(layout="NCWH"), ValueError,
     E("conv2d: layout must be 'NCHW' or 'NHWC', got 'NCWH'")),
    ("layout-lowercase", lambda: conv(layout="nchw"), ValueError,
     r"conv2d: layout must be 'NCHW' or 'NHWC', got 'nchw'"),
    ("layout-none", lambda: conv(layout=None), ValueError,
     r"conv2d: layout must be 'NCHW' or 'NHWC', got None"),
    ("method-unknown", lambda: conv(method="fast"), ValueError,
     E("conv2d: method must be one of 'auto', 'i2r', 'im2row', 'blocked', 'im2col', 'numpy', "
       "'winograd', 'winograd2', 'winograd4', got 'fast'")),
    ("method-none", lambda: conv(method=None), ValueError,
     r"conv2d: method must be one of .*, got None"),
    ("threads-0", lambda: conv(num_threads=0), ValueError,
     r"conv2d: num_threads must be None or >= 1, got 0"),
    ("threads-negative", lambda: conv(num_threads=-2), ValueError,
     r"conv2d: num_threads must be None or >= 1, got -2"),
    ("threads-float", lambda: conv(num_threads=2.0), TypeError,
     r"conv2d: num_threads must be an int, got float 2.0"),
    ("threads-bool", lambda: conv(num_threads=True), TypeError,
     r"conv2d: num_threads must be an int, got bool True"),
    ("threads-str", lambda: conv(num_threads="2"), TypeError,
     r"conv2d: num_threads must be an int, got str '2'"),
    # out
    ("out-list", lambda: conv(out=[0.0]), TypeError,
     r"conv2d: out must be a numpy.ndarray or None, got list"),
    ("out-dtype", lambda: conv(out=np.zeros(OUT_SHAPE, F64)), TypeError,
     r"conv2d: out must have dtype float32, got float64"),
    ("out-shape", lambda: conv(out=np.zeros((2, 8, 6, 7), F32)), ValueError,
     E("conv2d: expected out of shape (2, 8, 6, 6), got (2, 8, 6, 7)")),
    ("out-unbatched-shape", lambda: conv(out=np.zeros((8, 6, 6), F32)), ValueError,
     E("conv2d: expected out of shape (2, 8, 6, 6), got (8, 6, 6)")),
    ("out-nhwc-shape", lambda: conv(x=XN, weight=WN, layout="NHWC",
                                    out=np.zeros(OUT_SHAPE, F32)), ValueError,
     E("conv2d: expected out of shape (2, 6, 6, 8), got (2, 8, 6, 6)")),
    ("out-fortran", lambda: conv(out=np.zeros(OUT_SHAPE, F32, order="F")), ValueError,
     r"conv2d: out must be C-contiguous; allocate it with numpy.empty\(\(2, 8, 6, 6\), "
     r"dtype=numpy.float32\)"),
    ("out-strided", lambda: conv(out=np.zeros((2, 8, 6, 12), F32)[..., ::2]), ValueError,
     r"conv2d: out must be C-contiguous"),
    ("out-readonly", lambda: conv(out=np.broadcast_to(np.zeros(1, F32), OUT_SHAPE)), ValueError,
     r"conv2d: out must be (C-contiguous|writeable)"),
    ("out-overlaps-x", lambda: (lambda buf, x, w, b, o: conv(x=x, weight=w, bias=b, out=o))(
        *out_over("x")), ValueError, r"conv2d: out must not share memory with x"),
    ("out-overlaps-weight", lambda: (lambda buf, x, w, b, o: conv(x=x, weight=w, bias=b, out=o))(
        *out_over("weight")), ValueError, r"conv2d: out must not share memory with weight"),
    ("out-overlaps-bias", lambda: (lambda buf, x, w, b, o: conv(x=x, weight=w, bias=b, out=o))(
        *out_over("bias")), ValueError, r"conv2d: out must not share memory with bias"),
    ("out-is-x", lambda: (lambda x: conv(x=x, weight=np.ones((8, 8, 1, 1), F32), out=x))(
        np.ones(OUT_SHAPE, F32)), ValueError, r"conv2d: out must not share memory with x"),
    # 64-bit byte counts (zero-stride views: nothing big is allocated)
    ("overflow-output", lambda: conv(x=huge((2**20, 1, 2**20, 2**20)),
                                     weight=np.ones((8, 1, 1, 1), F32)), ValueError,
     r"conv2d: the output would need \d+ bytes, more than a 64-bit byte count can address"),
    ("overflow-padded-input", lambda: conv(x=huge((1, 2**20, 2**20, 2**20)),
                                           weight=huge((1, 2**20, 1, 1)), stride=2**19,
                                           padding=2**18), ValueError,
     r"conv2d: the padded input would need \d+ bytes, more than a 64-bit byte count"),
    ("overflow-im2row-matrix", lambda: conv(x=huge((1, 2**10, 2**16, 2**16)),
                                            weight=huge((1, 2**10, 2**10, 2**10))), ValueError,
     r"conv2d: one image's im2row matrix would need \d+ bytes, more than a 64-bit byte count"),
    ("overflow-strided", lambda: conv(x=np.lib.stride_tricks.as_strided(
        np.zeros(1, F64), (1, 1, 2**30, 2**29), (0, 0, 0, 0)),
        weight=np.ones((4, 1, 1, 1), F64)), ValueError,
     r"conv2d: the output would need \d+ bytes"),
]

PLAN_ERRORS = [
    ("weight-list", lambda: im2row.Conv2d(W.tolist()), TypeError,
     r"Conv2d: weight must be a numpy.ndarray, got list"),
    ("weight-int", lambda: im2row.Conv2d(W.astype(np.int16)), TypeError,
     r"Conv2d: weight must have dtype float32 or float64, got int16"),
    ("weight-complex", lambda: im2row.Conv2d(W.astype(np.complex128)), TypeError,
     r"Conv2d: weight must have dtype float32 or float64, got complex128"),
    ("weight-3d", lambda: im2row.Conv2d(W[0]), ValueError,
     E("Conv2d: expected weight with 4 dimensions, got 3 dimensions with shape (3, 3, 3)")),
    ("layout", lambda: im2row.Conv2d(W, layout="CHWN"), ValueError,
     E("Conv2d: layout must be 'NCHW' or 'NHWC', got 'CHWN'")),
    ("method", lambda: im2row.Conv2d(W, method="gemm"), ValueError,
     E("Conv2d: method must be one of 'auto', 'i2r', 'im2row', 'blocked', 'im2col', 'numpy', "
       "'winograd', 'winograd2', 'winograd4', got 'gemm'")),
    ("activation", lambda: im2row.Conv2d(W, activation="tanh"), ValueError,
     E("Conv2d: activation must be None or 'relu', got 'tanh'")),
    ("activation-upper", lambda: im2row.Conv2d(W, activation="ReLU"), ValueError,
     E("Conv2d: activation must be None or 'relu', got 'ReLU'")),
    ("groups-0", lambda: im2row.Conv2d(W, groups=0), ValueError,
     r"Conv2d: groups must be a positive int, got 0"),
    ("groups-bool", lambda: im2row.Conv2d(W, groups=True), TypeError,
     r"Conv2d: groups must be an int, got bool True"),
    ("groups-float", lambda: im2row.Conv2d(W, groups=2.0), TypeError,
     r"Conv2d: groups must be an int, got float 2.0"),
    ("groups-not-dividing-oc", lambda: im2row.Conv2d(W, groups=3), ValueError,
     E("Conv2d: groups=3 must divide the 8 output channels of weight with shape (8, 3, 3, 3)")),
    ("groups-not-dividing-oc-nhwc", lambda: im2row.Conv2d(WN, groups=3, layout="NHWC"),
     ValueError, E("Conv2d: groups=3 must divide the 8 output channels")),
    ("stride-0", lambda: im2row.Conv2d(W, stride=(0, 1)), ValueError,
     E("Conv2d: stride must be positive, got (0, 1)")),
    ("stride-float", lambda: im2row.Conv2d(W, stride=1.0), TypeError,
     r"Conv2d: stride must be an int, got float 1.0"),
    ("dilation-bool", lambda: im2row.Conv2d(W, dilation=True), TypeError,
     r"Conv2d: dilation must be an int, got bool True"),
    ("dilation-len3", lambda: im2row.Conv2d(W, dilation=[1, 2, 3]), ValueError,
     r"Conv2d: dilation must be an int or a pair of ints, got a sequence of length 3"),
    ("padding-negative", lambda: im2row.Conv2d(W, padding=((0, 0), (0, -1))), ValueError,
     r"Conv2d: padding must be >= 0"),
    ("padding-string", lambda: im2row.Conv2d(W, padding="full"), ValueError,
     r"Conv2d: padding must be .* got the string 'full'"),
    ("padding-len3", lambda: im2row.Conv2d(W, padding=[0, 0, 0]), ValueError,
     r"Conv2d: padding must be .*got a sequence of length 3"),
    ("padding-float", lambda: im2row.Conv2d(W, padding=0.5), TypeError,
     r"Conv2d: padding must be an int, got float 0.5"),
    ("bias-shape", lambda: im2row.Conv2d(W, np.zeros(3, F32)), ValueError,
     E("Conv2d: expected bias of shape (OC,) = (8,), got (3,)")),
    ("bias-dtype", lambda: im2row.Conv2d(W, np.zeros(8, F64)), TypeError,
     r"Conv2d: bias must have the same dtype as weight \(float32\), got float64"),
    ("bias-list", lambda: im2row.Conv2d(W, [0.0] * 8), TypeError,
     r"Conv2d: bias must be a numpy.ndarray, got list"),
    ("bias-int", lambda: im2row.Conv2d(W, np.zeros(8, np.int32)), TypeError,
     r"Conv2d: bias must have dtype float32 or float64, got int32"),
]

CALL_ERRORS = [
    ("x-list", lambda: plan_call(x=X.tolist()), TypeError,
     r"Conv2d: x must be a numpy.ndarray, got list"),
    ("x-int", lambda: plan_call(x=X.astype(np.int8)), TypeError,
     r"Conv2d: x must have dtype float32 or float64, got int8"),
    ("x-bool", lambda: plan_call(x=X.astype(bool)), TypeError,
     r"Conv2d: x must have dtype float32 or float64, got bool"),
    ("x-2d", lambda: plan_call(x=X[0, 0]), ValueError,
     E("Conv2d: expected x with 3 or 4 dimensions, got 2 dimensions with shape (8, 8)")),
    ("x-dtype-mismatch", lambda: plan_call(x=X.astype(F64)), TypeError,
     r"Conv2d: x and weight must have the same dtype, got x float64 and weight float32"),
    ("channel-mismatch", lambda: plan_call(x=np.ones((1, 4, 8, 8), F32)), ValueError,
     E("Conv2d: expected weight of shape (OC, C/groups, KH, KW) = (*, 4, *, *) for input with "
       "4 channels and groups=1, but got weight of shape (8, 3, 3, 3)")),
    ("channel-mismatch-unbatched", lambda: plan_call(x=np.ones((5, 8, 8), F32)), ValueError,
     r"Conv2d: expected weight of shape .* = \(\*, 5, \*, \*\) for input with 5 channels"),
    ("groups-not-dividing-c", lambda: plan_call(x=np.ones((1, 3, 8, 8), F32),
                                                weight=np.ones((8, 1, 3, 3), F32), groups=2),
     ValueError, r"Conv2d: groups=2 must divide the 3 input channels"),
    ("kernel-too-large", lambda: plan_call(x=np.ones((1, 3, 2, 8), F32)), ValueError,
     E("Conv2d: the dilated kernel (3, 3) is larger than the padded input (2, 8)")),
    ("kernel-too-large-same-stride", lambda: plan_call(x=np.ones((1, 3, 8, 8), F32),
                                                       dilation=5), ValueError,
     E("Conv2d: the dilated kernel (11, 11) is larger than the padded input (8, 8)")),
    ("threads-0", lambda: plan_call(num_threads=0), ValueError,
     r"Conv2d: num_threads must be None or >= 1, got 0"),
    ("threads-float", lambda: plan_call(num_threads=1.5), TypeError,
     r"Conv2d: num_threads must be an int, got float 1.5"),
    ("out-list", lambda: plan_call(out=[]), TypeError,
     r"Conv2d: out must be a numpy.ndarray or None, got list"),
    ("out-dtype", lambda: plan_call(out=np.zeros(OUT_SHAPE, F64)), TypeError,
     r"Conv2d: out must have dtype float32, got float64"),
    ("out-shape", lambda: plan_call(out=np.zeros((2, 8, 8, 8), F32)), ValueError,
     E("Conv2d: expected out of shape (2, 8, 6, 6), got (2, 8, 8, 8)")),
    ("out-not-contiguous", lambda: plan_call(out=np.zeros((2, 6, 6, 8), F32).transpose(0, 3, 1, 2)),
     ValueError, r"Conv2d: out must be C-contiguous"),
    ("out-readonly", lambda: plan_call(out=_readonly(np.zeros(OUT_SHAPE, F32))), ValueError,
     r"Conv2d: out must be writeable, got a read-only array"),
    ("out-overlaps-x", lambda: (lambda buf, x, w, b, o: plan_call(x=x, out=o))(*out_over("x")),
     ValueError, r"Conv2d: out must not share memory with x"),
    ("overflow-output", lambda: plan_call(x=huge((2**19, 3, 2**20, 2**20))), ValueError,
     r"Conv2d: the output would need \d+ bytes, more than a 64-bit byte count can address"),
]


def _readonly(a):
    a.flags.writeable = False
    return a


WORKSPACE_ERRORS = [
    ("method", lambda: im2row.workspace_bytes(X.shape, W.shape, method="fastest"), ValueError,
     r"workspace_bytes: method must be one of .*got 'fastest'"),
    ("layout", lambda: im2row.workspace_bytes(X.shape, W.shape, layout="HWC"), ValueError,
     E("workspace_bytes: layout must be 'NCHW' or 'NHWC', got 'HWC'")),
    ("dtype-int", lambda: im2row.workspace_bytes(X.shape, W.shape, dtype=np.int32), TypeError,
     r"workspace_bytes: dtype must be float32 or float64, got int32"),
    ("dtype-float16", lambda: im2row.workspace_bytes(X.shape, W.shape, dtype="float16"),
     TypeError, r"workspace_bytes: dtype must be float32 or float64, got float16"),
    ("input-shape-2", lambda: im2row.workspace_bytes((8, 8), W.shape), ValueError,
     E("workspace_bytes: input_shape must have 3 or 4 entries, got (8, 8)")),
    ("input-shape-5", lambda: im2row.workspace_bytes((1, 1, 3, 8, 8), W.shape), ValueError,
     r"workspace_bytes: input_shape must have 3 or 4 entries, got \(1, 1, 3, 8, 8\)"),
    ("weight-shape-3", lambda: im2row.workspace_bytes(X.shape, (8, 3, 3)), ValueError,
     E("workspace_bytes: weight_shape must have 4 entries, got (8, 3, 3)")),
    ("channel-mismatch", lambda: im2row.workspace_bytes(X.shape, (8, 2, 3, 3)), ValueError,
     E("workspace_bytes: expected weight of shape (OC, C/groups, KH, KW) = (*, 3, *, *) for "
       "input with 3 channels and groups=1, but got weight of shape (8, 2, 3, 3)")),
    ("groups", lambda: im2row.workspace_bytes(X.shape, W.shape, groups=0), ValueError,
     r"workspace_bytes: groups must be a positive int, got 0"),
    ("groups-c", lambda: im2row.workspace_bytes(X.shape, (8, 1, 3, 3), groups=2), ValueError,
     r"workspace_bytes: groups=2 must divide the 3 input channels"),
    ("stride", lambda: im2row.workspace_bytes(X.shape, W.shape, stride=0), ValueError,
     r"workspace_bytes: stride must be positive, got 0"),
    ("padding", lambda: im2row.workspace_bytes(X.shape, W.shape, padding="full"), ValueError,
     r"workspace_bytes: padding must be .*got the string 'full'"),
    ("kernel-too-large", lambda: im2row.workspace_bytes((1, 3, 2, 2), W.shape), ValueError,
     E("workspace_bytes: the dilated kernel (3, 3) is larger than the padded input (2, 2)")),
    ("threads-0", lambda: im2row.workspace_bytes(X.shape, W.shape, num_threads=0), ValueError,
     r"workspace_bytes: num_threads must be None or >= 1, got 0"),
    ("threads-bool", lambda: im2row.workspace_bytes(X.shape, W.shape, num_threads=True),
     TypeError, r"workspace_bytes: num_threads must be an int, got bool True"),
    ("overflow-output", lambda: im2row.workspace_bytes((2**40, 3, 2**20, 2**20), W.shape),
     ValueError, r"workspace_bytes: the output would need \d+ bytes, more than a 64-bit"),
    ("overflow-padded-input", lambda: im2row.workspace_bytes(
        (1, 2**40, 2**20, 2**20), (1, 2**40, 2**20, 2**20)), ValueError,
     r"workspace_bytes: the padded input would need \d+ bytes"),
    ("overflow-im2row-matrix", lambda: im2row.workspace_bytes(
        (1, 2**10, 2**16, 2**16), (1, 2**10, 2**10, 2**10), dtype=F64), ValueError,
     r"workspace_bytes: one image's im2row matrix would need \d+ bytes"),
]

LOWERING_ERRORS = []
for _fn in ("im2row", "im2col"):
    _f = getattr(im2row, _fn)
    LOWERING_ERRORS += [
        (f"{_fn}-x-list", lambda f=_f: f(X.tolist(), 3), TypeError,
         rf"{_fn}: x must be a numpy.ndarray, got list"),
        (f"{_fn}-x-int", lambda f=_f: f(X.astype(int), 3), TypeError,
         rf"{_fn}: x must have dtype float32 or float64, got int64"),
        (f"{_fn}-x-2d", lambda f=_f: f(X[0, 0], 3), ValueError,
         rf"{_fn}: expected x with 3 or 4 dimensions, got 2 dimensions"),
        (f"{_fn}-layout", lambda f=_f: f(X, 3, layout="NWHC"), ValueError,
         rf"{_fn}: layout must be 'NCHW' or 'NHWC', got 'NWHC'"),
        (f"{_fn}-kernel-0", lambda f=_f: f(X, 0), ValueError,
         rf"{_fn}: kernel_size must be positive, got 0"),
        (f"{_fn}-kernel-pair-0", lambda f=_f: f(X, (3, 0)), ValueError,
         rf"{_fn}: kernel_size must be positive, got \(3, 0\)"),
        (f"{_fn}-kernel-float", lambda f=_f: f(X, 3.0), TypeError,
         rf"{_fn}: kernel_size must be an int, got float 3.0"),
        (f"{_fn}-kernel-bool", lambda f=_f: f(X, True), TypeError,
         rf"{_fn}: kernel_size must be an int, got bool True"),
        (f"{_fn}-kernel-len3", lambda f=_f: f(X, (3, 3, 3)), ValueError,
         rf"{_fn}: kernel_size must be an int or a pair of ints, got a sequence of length 3"),
        (f"{_fn}-stride", lambda f=_f: f(X, 3, stride=-1), ValueError,
         rf"{_fn}: stride must be positive, got -1"),
        (f"{_fn}-dilation", lambda f=_f: f(X, 3, dilation=1.0), TypeError,
         rf"{_fn}: dilation must be an int, got float 1.0"),
        (f"{_fn}-padding", lambda f=_f: f(X, 3, padding=-2), ValueError,
         rf"{_fn}: padding must be >= 0, got -2"),
        (f"{_fn}-padding-str", lambda f=_f: f(X, 3, padding="half"), ValueError,
         rf"{_fn}: padding must be .*got the string 'half'"),
        (f"{_fn}-kernel-too-large", lambda f=_f: f(X, 9), ValueError,
         rf"{_fn}: the dilated kernel \(9, 9\) is larger than the padded input \(8, 8\)"),
        (f"{_fn}-overflow", lambda f=_f: f(huge((1, 2**10, 2**16, 2**16)), 2**10), ValueError,
         rf"{_fn}: one image's im2row matrix would need \d+ bytes"),
    ]


def _table(rows):
    return pytest.mark.parametrize("call,exc,match", [r[1:] for r in rows],
                                   ids=[r[0] for r in rows])


@_table(CONV2D_ERRORS)
def test_conv2d_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("bad", [dict(stride=True), dict(stride=1.0), dict(groups=True),
                                 dict(padding=(1, 1.0)), dict(dilation=(1, True))])
def test_memoised_geometry_keeps_its_type_checks(bad):
    """A valid call's parsed geometry is memoised; an argument equal to it but of another
    type (True == 1 == 1.0) still gets its TypeError."""
    good = {k: (1, 1) if isinstance(v, tuple) else 1 for k, v in bad.items()}
    conv(**good)
    with pytest.raises(TypeError, match=r"conv2d: (stride|groups|padding|dilation)"):
        conv(**bad)
    args = dict(stride=1, padding=1, dilation=1, groups=1)   # the memo itself
    make_spec(X.shape, W.shape, F32, **{**args, **good}, layout="NCHW", op="conv2d")
    with pytest.raises(TypeError, match=r"conv2d: (stride|groups|padding|dilation)"):
        make_spec(X.shape, W.shape, F32, **{**args, **bad}, layout="NCHW", op="conv2d")


def test_memoised_one_shot_call_keeps_every_check():
    """A valid conv2d call's checks are memoised by its exact arguments (_api._ONE_SHOTS):
    the next call with the same shapes and arguments skips them, but reads its own arrays
    (new weight values, bias, out), and a call that differs in any checked respect (a float
    stride, another bias dtype, an ndarray subclass, out overlapping the input, a wrong
    out shape) still gets its error."""
    from im2row import _api
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 6, 6, 16)).astype(F32)
    w = rng.standard_normal((3, 3, 16, 24)).astype(F32)
    b = rng.standard_normal(24).astype(F32)
    kw = dict(padding=1, layout="NHWC", num_threads=1)
    _api._ONE_SHOTS.clear()
    first = im2row.conv2d(x, w, b, **kw)
    assert len(_api._ONE_SHOTS) == 1
    for scale in (2.0, -1.0):   # the weights are read anew: no stale packing
        again = im2row.conv2d(x, w * scale, b * scale, **kw)
        np.testing.assert_allclose(again, first * scale, rtol=1e-5, atol=1e-5)
    out = np.full(first.shape, np.nan, F32)
    assert im2row.conv2d(x, w, b, out=out, **kw) is out and np.array_equal(out, first)
    assert len(_api._ONE_SHOTS) == 1
    with pytest.raises(TypeError, match="conv2d: stride"):
        im2row.conv2d(x, w, b, stride=1.0, **kw)
    with pytest.raises(TypeError, match="conv2d: bias must have the same dtype"):
        im2row.conv2d(x, w, b.astype(F64), **kw)
    with pytest.raises(ValueError, match="conv2d: expected out of shape"):
        im2row.conv2d(x, w, b, out=np.empty((1, 6, 6, 23), F32), **kw)
    shared = np.zeros((1, 6, 6, 24), F32)   # x a view of out: same shapes as the memo's
    with pytest.raises(ValueError, match="conv2d: out must not share memory with x"):
        im2row.conv2d(shared[..., :16], w, b, out=shared, **kw)
    masked = np.ma.masked_array(x)   # a subclass: not memoised, checked as before
    assert _api.one_shot_key(masked, w, b, 1, 1, 1, 1, "NHWC", "auto", False, 1) is None
    with pytest.raises(TypeError, match="conv2d: allow_winograd"):
        im2row.conv2d(x, w, b, allow_winograd=1, **kw)


def test_memoised_one_shot_call_follows_later_tuning(monkeypatch):
    """An "auto" call memoised before a tuning plan stored another method for its geometry
    runs the stored method afterwards (the memo entry is stale and is rebuilt)."""
    from im2row import _api
    if _backend.native is None:
        pytest.skip("compiled extension not available")
    x = np.ones((1, 9, 11, 32), F32)
    w = np.ones((3, 3, 32, 17), F32)
    kw = dict(padding=1, layout="NHWC", num_threads=1)
    plan = im2row.Conv2d(w, padding=1, layout="NHWC")
    rule = plan.measure(x, num_threads=1)[1]["method"]
    other = "blocked" if rule == "i2r" else "i2r"
    _api._ONE_SHOTS.clear()
    im2row.conv2d(x, w, **kw)
    monkeypatch.setattr(_api, "_WISDOM", {})
    spec = _api.make_spec(x.shape, w.shape, np.dtype(F32), 1, 1, 1, 1, "NHWC", "test")
    _api._WISDOM[_api.wisdom_key(spec, _api.spec_geometry(spec), 1)] = other
    seen = []
    real = _api.Conv2d._run
    monkeypatch.setattr(_api.Conv2d, "_run", lambda self, *a: seen.append(
        self._prepared) or real(self, *a))
    im2row.conv2d(x, w, **kw)
    assert [m for (_, m, _) in seen[0].values()] == [other]


@_table(PLAN_ERRORS)
def test_conv2d_plan_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@_table(CALL_ERRORS)
def test_conv2d_plan_call_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@_table(WORKSPACE_ERRORS)
def test_workspace_bytes_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@_table(LOWERING_ERRORS)
def test_lowering_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("method", ["i2r", "im2row", "blocked"])
def test_compiled_method_error_when_unavailable(method, monkeypatch):
    """Asking for a compiled method without the extension is a RuntimeError naming why (the
    real fallback is covered in test_backend.py through IM2ROW_FORCE_NUMPY)."""
    monkeypatch.setattr(_backend, "native", None)
    monkeypatch.setattr(_backend, "unavailable_reason", "testing: no extension")
    with pytest.raises(RuntimeError, match=r"method='%s' needs the compiled extension, which is "
                       r"unavailable: testing: no extension" % method):
        im2row.conv2d(X, W, method=method)
    with pytest.raises(RuntimeError, match="testing: no extension"):
        im2row.Conv2d(W, method=method)
    with pytest.raises(RuntimeError, match="testing: no extension"):
        im2row.workspace_bytes(X.shape, W.shape, method=method)


# ---------------------------------------------------------------------------- nothing written

FAILING_WITH_OUT = [
    ("bias-shape", dict(bias=np.zeros(7, F32))),
    ("bias-dtype", dict(bias=np.zeros(8, F64))),
    ("threads-0", dict(num_threads=0)),
    ("threads-float", dict(num_threads=1.0)),
    ("stride-0", dict(stride=0)),
    ("padding-negative", dict(padding=-1)),
    ("groups", dict(groups=2)),
    ("method", dict(method="nope")),
    ("layout", dict(layout="NHCW")),
    ("x-dtype", dict(x=X.astype(F64))),
    ("x-channels", dict(x=np.ones((2, 4, 8, 8), F32))),
    ("kernel-too-large", dict(dilation=5)),
]


@pytest.mark.parametrize("method", ["numpy", "im2col", "auto", "i2r", "im2row", "blocked"])
@pytest.mark.parametrize("bad", [b[1] for b in FAILING_WITH_OUT],
                         ids=[b[0] for b in FAILING_WITH_OUT])
def test_out_untouched_after_error(bad, method):
    if method in ("i2r", "im2row", "blocked") and _backend.native is None:
        pytest.skip("compiled extension not available")
    kw = dict(method=method)
    kw.update(bad)
    out = np.full(OUT_SHAPE, 7.0, F32)
    with pytest.raises((ValueError, TypeError)):
        conv(out=out, **kw)
    assert (out == 7.0).all()
    # the same through a plan's call
    if set(bad) & {"num_threads", "x"}:
        x = bad.get("x", X)
        out = np.full(OUT_SHAPE, 7.0, F32)
        plan = im2row.Conv2d(W, method=method)
        with pytest.raises((ValueError, TypeError)):
            plan(x, out=out, num_threads=bad.get("num_threads"))
        assert (out == 7.0).all()


@pytest.mark.parametrize("kind", ["x", "weight", "bias"])
def test_overlapping_out_leaves_inputs_alone(kind):
    """A refused `out` that overlaps an input: neither the inputs nor the buffer change."""
    buf, x, w, b, out = out_over(kind)
    rng = np.random.default_rng(0)
    buf[...] = rng.uniform(-1, 1, buf.shape).astype(F32)
    before = buf.copy()
    with pytest.raises(ValueError, match=f"out must not share memory with {kind}"):
        im2row.conv2d(x, w, b, out=out)
    np.testing.assert_array_equal(buf, before)


def test_errors_are_value_or_type_errors_only():
    """Every call above raises exactly ValueError or TypeError, the one its row names: not a
    subclass (the table tests' pytest.raises would accept one), not an IndexError or an
    internal error. The calls are made here, not just the tables read."""
    for rows in (CONV2D_ERRORS, PLAN_ERRORS, CALL_ERRORS, WORKSPACE_ERRORS, LOWERING_ERRORS):
        for name, call, exc, _ in rows:
            try:
                call()
            except Exception as e:   # noqa: BLE001  (whatever it is, it is checked)
                assert type(e) in (ValueError, TypeError), (name, type(e), e)
                assert type(e) is exc, (name, type(e), e)
            else:
                pytest.fail(f"{name}: no exception raised")


# ---------------------------------------------------------------------------- huge geometries

def _ws(input_shape, weight_shape, **kw):
    try:
        return im2row.workspace_bytes(input_shape, weight_shape, **kw)
    except ValueError as e:
        assert "64-bit byte count" in str(e), e
        return None


HUGE_SWEEPS = {
    # tall images: the strip and the NCHW column buffer grow with H
    "height": lambda k: ((1, 1, 2**k, 1), (1, 1, 1, 1)),
    # many images: the copied values grow with N
    "batch": lambda k: ((2**k, 2**10, 2**10, 2**10), (1, 2**10, 3, 3)),
    # wide kernels: the packed weights grow with KW (one copy per strip rotation)
    "kernel-width": lambda k: ((1, 1, 1, 2**k), (1, 1, 1, 2**k)),
    # many output channels
    "out-channels": lambda k: ((1, 2**10, 1, 1), (2**k, 2**10, 1, 1)),
}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("method", ["i2r", "im2row", "blocked", "numpy", "im2col"])
@pytest.mark.parametrize("sweep", list(HUGE_SWEEPS))
def test_workspace_bytes_huge_sizes_never_wrap(sweep, method, layout):
    """Growing one size never makes a reported byte count shrink or go negative: past 64
    bits workspace_bytes must raise a clear ValueError, not return a wrapped number."""
    if method in ("i2r", "im2row", "blocked") and _backend.native is None:
        pytest.skip("compiled extension not available")
    prev, refused = None, False
    for k in range(20, 64):
        xs, wshape = HUGE_SWEEPS[sweep](k)
        if layout == "NHWC":
            xs = (xs[0], xs[2], xs[3], xs[1])
            wshape = (wshape[2], wshape[3], wshape[1], wshape[0])
        ws = _ws(xs, wshape, padding=0, method=method, num_threads=1, layout=layout)
        if ws is None:
            refused = True
            continue
        assert not refused, f"{sweep}=2**{k} accepted after a smaller size was refused"
        for key in ("workspace", "packed_weights", "copied"):
            assert ws[key] >= 0, (f"{sweep}=2**{k}: negative {key}", ws)
        if method in ("i2r", "im2row", "blocked"):
            assert ws["packed_weights"] >= math.prod(wshape) * 4, (sweep, k, ws)
        n, c = xs[0], (xs[1] if layout == "NCHW" else xs[3])
        kh, kw = (wshape[2], wshape[3]) if layout == "NCHW" else wshape[:2]
        oh, ow = (xs[2] - kh + 1, xs[3] - kw + 1) if layout == "NCHW" else \
            (xs[1] - kh + 1, xs[2] - kw + 1)
        if method in ("im2row", "blocked") and layout == "NHWC" and kh == kw == 1:
            # the GEMM reads the input in place, but "blocked" copies pixels a multiple of
            # 4 KiB apart (they would share an L1 set) into rows that are not
            aliased = method == "blocked" and c * 4 % 4096 == 0
            assert ws["copied"] == (n * oh * ow * c * 4 if aliased else 0), (sweep, k, ws)
        elif method != "i2r":   # the others write the whole im2row matrix
            assert ws["copied"] == n * oh * ow * c * kh * kw * 4, (sweep, k, ws)
        if prev is not None:
            for key in ("workspace", "packed_weights", "copied"):
                assert ws[key] >= prev[key], (f"{sweep}=2**{k}: {key} shrank", prev, ws)
        prev = ws


# ---------------------------------------------------------------------------- odd integers

@pytest.mark.parametrize("shape", [(1, 3, 8.0, 8), (1, 3, None, 8), (1, 3, "8", 8),
                                   (1, 3, True, 8), (1, 3, -8, 8), (-1, 3, 8, 8)],
                         ids=["float", "None", "str", "bool", "negative-h", "negative-n"])
def test_workspace_bytes_bad_shape_entries(shape):
    """input_shape entries are sizes: non-negative ints, named in the error."""
    with pytest.raises((TypeError, ValueError), match=r"workspace_bytes: input_shape"):
        im2row.workspace_bytes(shape, W.shape, method="numpy")


@pytest.mark.parametrize("method", ["numpy", "i2r", "im2row", "blocked"])
@pytest.mark.parametrize("threads", [2**31, 2**63], ids=["2**31", "2**63"])
def test_huge_num_threads(threads, method):
    """A valid int >= 1 beyond what the machine has: clamped (same result) or a ValueError
    naming num_threads, never an OverflowError from the extension."""
    if method != "numpy" and _backend.native is None:
        pytest.skip("compiled extension not available")
    want = im2row.conv2d(X, W, method=method, num_threads=1)
    try:
        got = im2row.conv2d(X, W, method=method, num_threads=threads)
    except ValueError as e:
        assert "num_threads" in str(e)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", ["numpy", "im2col", "i2r", "im2row", "blocked"])
@pytest.mark.parametrize("arg", ["stride", "dilation"])
def test_huge_stride_and_dilation(arg, method):
    """stride 2**63 (or dilation 2**63 with a 1x1 kernel) is refused with a ValueError naming
    the argument (parameters are capped at 2**31 - 1), the same for every method, never an
    OverflowError from the kernels."""
    if method in ("i2r", "im2row", "blocked") and _backend.native is None:
        pytest.skip("compiled extension not available")
    w = W if arg == "stride" else W[:, :, :1, :1].copy()
    with pytest.raises(ValueError, match=rf"conv2d: {arg} must be at most 2\*\*31 - 1"):
        im2row.conv2d(X, w, method=method, **{arg: 2**63})
    # the largest accepted value works and agrees with the NumPy path
    kw = {arg: 2**31 - 1}
    np.testing.assert_array_equal(im2row.conv2d(X, w, method=method, **kw),
                                  im2row.conv2d(X, w, method="numpy", **kw))
