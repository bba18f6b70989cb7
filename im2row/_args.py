"""Argument checking for the public API.

Everything here runs before any compiled code: a call either gets a ``ConvSpec`` that the
kernels can trust (positive sizes, byte counts that fit in 64 bits, matching dtypes) or a
``ValueError``/``TypeError`` that names the argument, the rule and the value it got.
"""
import operator
from dataclasses import dataclass

import numpy as np

LAYOUTS = ("NCHW", "NHWC")
WINOGRAD_METHODS = ("winograd", "winograd2", "winograd4")
METHODS = ("auto", "i2r", "im2row", "blocked", "im2col", "numpy") + WINOGRAD_METHODS
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_BYTES = 2**63 - 1
_TooHardError = getattr(np, "exceptions", np).TooHardError


@dataclass(frozen=True)
class ConvSpec:
    """The geometry of one convolution call, in layout-independent terms."""
    n: int
    c: int
    h: int
    w: int
    oc: int
    kh: int
    kw: int
    groups: int
    stride: tuple       # (sh, sw)
    dilation: tuple     # (dh, dw)
    padding: tuple      # (top, bottom, left, right)
    oh: int
    ow: int
    layout: str
    batched: bool
    dtype: np.dtype

    @property
    def cg(self):
        return self.c // self.groups

    @property
    def ocg(self):
        return self.oc // self.groups

    @property
    def out_shape(self):
        if self.layout == "NCHW":
            shape = (self.n, self.oc, self.oh, self.ow)
        else:
            shape = (self.n, self.oh, self.ow, self.oc)
        return shape if self.batched else shape[1:]

    @property
    def flops(self):
        """Multiply-adds counted as two: 2*N*OC*OH*OW*(C/groups)*KH*KW."""
        return 2 * self.n * self.oc * self.oh * self.ow * self.cg * self.kh * self.kw


def _int(value, name, op):
    """An integer argument: Python or NumPy int, never bool or float."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be an int, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}") from None


def _bounded(value, name, op):
    if value > _MAX_PARAM:
        raise ValueError(f"{op}: {name} must be at most 2**31 - 1, got {value}")
    return value


def parse_pair(value, name, op, minimum=1):
    """int or pair of ints (each >= minimum, < 2**31) -> (a, b)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, "
                             f"got a sequence of length {len(value)}: {value!r}")
        pair = (_int(value[0], name, op), _int(value[1], name, op))
    else:
        v = _int(value, name, op)
        pair = (v, v)
    if min(pair) < minimum:
        rule = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{op}: {name} must be {rule}, got {value!r}")
    return (_bounded(pair[0], name, op), _bounded(pair[1], name, op))


def parse_padding(padding, in_hw, kernel_hw, stride, dilation, op):
    """Every accepted padding form -> (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            pads = []
            for size, k, s, d in zip(in_hw, kernel_hw, stride, dilation):
                out = -(-size // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                pads += [total // 2, total - total // 2]   # odd extra at bottom/right (TensorFlow)
            return tuple(pads)
        raise ValueError(f"{op}: padding must be an int, a pair, a pair of pairs, 'valid' or "
                         f"'same', got the string {padding!r}")
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ValueError(f"{op}: padding must be an int, (ph, pw) or ((top, bottom), (left, "
                             f"right)), got a sequence of length {len(padding)}: {padding!r}")
        pads = []
        for side, axis in zip(padding, ("height", "width")):
            if isinstance(side, (tuple, list)):
                if len(side) != 2:
                    raise ValueError(f"{op}: padding for the {axis} must be an int or a pair "
                                     f"(before, after), got {side!r}")
                pads += [_int(side[0], "padding", op), _int(side[1], "padding", op)]
            else:
                p = _int(side, "padding", op)
                pads += [p, p]
    else:
        p = _int(padding, "padding", op)
        pads = [p, p, p, p]
    if min(pads) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding!r}")
    return tuple(_bounded(p, "padding", op) for p in pads)


def check_array(a, name, op, ndims):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}; "
                        f"convert it with numpy.asarray({name}, dtype=numpy.float32)")
    if a.dtype not in DTYPES:
        raise TypeError(f"{op}: {name} must have dtype float32 or float64, got {a.dtype}; "
                        f"convert it with {name}.astype(numpy.float32)")
    if a.ndim not in ndims:
        want = " or ".join(str(d) for d in ndims)
        raise ValueError(f"{op}: expected {name} with {want} dimensions, got {a.ndim} "
                         f"dimensions with shape {a.shape}")


def check_layout(layout, op):
    if layout not in LAYOUTS:
        raise ValueError(f"{op}: layout must be 'NCHW' or 'NHWC', got {layout!r}")


def check_num_threads(num_threads, op):
    if num_threads is None:
        return None
    if type(num_threads) is int and 1 <= num_threads <= MAX_THREADS:   # the common case
        return num_threads
    n = _int(num_threads, "num_threads", op)
    if n < 1:
        raise ValueError(f"{op}: num_threads must be None or >= 1, got {num_threads!r}")
    return min(n, MAX_THREADS)


# The compiled kernels' own buffers (scratch, packed weights) are sized by the C planner,
# which saturates its byte counts and refuses sizes past 2**62 (see _api.check_kernel_sizes).
MAX_THREADS = 1 << 12    # num_threads above this (or above the work items) start no more threads
_MAX_PARAM = 2**31 - 1   # stride, dilation, padding, groups


def check_byte_count(count, itemsize, what, op, limit=_MAX_BYTES):
    if count * itemsize > limit:
        raise ValueError(f"{op}: {what} would need {count * itemsize} bytes, more than a 64-bit "
                         f"byte count can address")


_SPECS = {}            # exact arguments -> ConvSpec, see make_spec
_SPECS_MAX = 256


def _exact(v):
    """v itself if it is made of exact ints and strings only (tuples of them included), so
    that two such keys are equal only for the same argument (1, 1.0 and True are equal but
    not the same argument); None for anything else (bools, floats, NumPy ints, lists): not
    memoised."""
    if type(v) in (int, str):
        return v
    if type(v) is tuple:
        parts = tuple(_exact(e) for e in v)
        return None if None in parts else parts
    return None


def make_spec(x_shape, w_shape, dtype, stride, padding, dilation, groups, layout, op):
    """Shapes and geometry -> ConvSpec (x_shape 3-D or 4-D, w_shape 4-D, both already checked
    for ndim). Memoised on the exact arguments (a spec is frozen; errors are not memoised,
    so each bad call raises its own): parsing them costs ~10 us, a lot next to a small
    convolution."""
    key = (tuple(x_shape), tuple(w_shape), _exact(stride), _exact(padding), _exact(dilation),
           _exact(groups), _exact(layout))   # shapes: ints already (.shape or checked)
    if None not in key:
        key += (np.dtype(dtype),)
        spec = _SPECS.get(key)
        if spec is None:
            spec = _make_spec(x_shape, w_shape, dtype, stride, padding, dilation, groups,
                              layout, op)
            if len(_SPECS) >= _SPECS_MAX:
                _SPECS.clear()
            _SPECS[key] = spec
        return spec
    return _make_spec(x_shape, w_shape, dtype, stride, padding, dilation, groups, layout, op)


def _make_spec(x_shape, w_shape, dtype, stride, padding, dilation, groups, layout, op):
    check_layout(layout, op)
    batched = len(x_shape) == 4
    xs = tuple(x_shape) if batched else (1,) + tuple(x_shape)
    if layout == "NCHW":
        n, c, h, w = xs
        oc, wc, kh, kw = w_shape
        wdesc, want = "(OC, C/groups, KH, KW)", "(*, {}, *, *)"
    else:
        n, h, w, c = xs
        kh, kw, wc, oc = w_shape
        wdesc, want = "(KH, KW, C/groups, OC)", "(*, *, {}, *)"
    groups = _int(groups, "groups", op)
    if groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups}")
    _bounded(groups, "groups", op)
    if c % groups:
        raise ValueError(f"{op}: groups={groups} must divide the {c} input channels")
    if wc * groups != c:
        raise ValueError(f"{op}: expected weight of shape {wdesc} = {want.format(c // groups)} "
                         f"for input with {c} channels and groups={groups}, but got weight of "
                         f"shape {tuple(w_shape)}")
    if oc % groups:
        raise ValueError(f"{op}: groups={groups} must divide the {oc} output channels "
                         f"of weight with shape {tuple(w_shape)}")
    stride = parse_pair(stride, "stride", op)
    dilation = parse_pair(dilation, "dilation", op)
    if kh < 1 or kw < 1:
        raise ValueError(f"{op}: the kernel must be at least 1x1, got weight of shape "
                         f"{tuple(w_shape)}")
    pads = parse_padding(padding, (h, w), (kh, kw), stride, dilation, op)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    ekh, ekw = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    if ekh > hp or ekw > wp:
        raise ValueError(f"{op}: the dilated kernel ({ekh}, {ekw}) is larger than the padded "
                         f"input ({hp}, {wp})")
    oh = (hp - ekh) // stride[0] + 1
    ow = (wp - ekw) // stride[1] + 1
    itemsize = np.dtype(dtype).itemsize
    check_byte_count(n * oc * oh * ow, itemsize, "the output", op)
    check_byte_count(n * c * hp * wp, itemsize, "the padded input", op)
    check_byte_count(oh * ow * c * kh * kw, itemsize, "one image's im2row matrix", op)
    check_byte_count(n * oh * ow * c * kh * kw, itemsize, "the batch's im2row matrix", op)
    return ConvSpec(n, c, h, w, oc, kh, kw, groups, stride, dilation, pads, oh, ow,
                    layout, batched, np.dtype(dtype))


def check_same_dtype(x, weight_dtype, op):
    if x.dtype != weight_dtype:
        raise TypeError(f"{op}: x and weight must have the same dtype, got x {x.dtype} and "
                        f"weight {weight_dtype}; cast one with .astype()")


def check_conv_args(x, weight, bias, stride, padding, dilation, groups, layout, op):
    """Every check conv2d makes before building its plan, so errors name conv2d."""
    check_layout(layout, op)
    check_array(x, "x", op, (3, 4))
    check_array(weight, "weight", op, (4,))
    check_same_dtype(x, weight.dtype, op)
    spec = make_spec(x.shape, weight.shape, x.dtype, stride, padding, dilation, groups,
                     layout, op)
    check_bias(bias, spec.oc, spec.dtype, op)
    return spec


def check_bias(bias, oc, dtype, op):
    if bias is None:
        return
    check_array(bias, "bias", op, (1,))
    if bias.dtype != dtype:
        raise TypeError(f"{op}: bias must have the same dtype as weight ({dtype}), got "
                        f"{bias.dtype}; cast it with bias.astype(numpy.{dtype})")
    if bias.shape != (oc,):
        raise ValueError(f"{op}: expected bias of shape (OC,) = ({oc},), got {bias.shape}")


def check_out(out, spec, inputs, op):
    """A user-supplied result buffer: exact shape and dtype, C-contiguous, writeable, and sharing
    no memory with any input (the kernels read the inputs while they write the result)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{op}: out must be a numpy.ndarray or None, got {type(out).__name__}")
    if out.dtype != spec.dtype:
        raise TypeError(f"{op}: out must have dtype {spec.dtype}, got {out.dtype}")
    if out.shape != spec.out_shape:
        raise ValueError(f"{op}: expected out of shape {spec.out_shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{op}: out must be C-contiguous; allocate it with numpy.empty("
                         f"{spec.out_shape}, dtype=numpy.{spec.dtype})")
    if not out.flags.writeable:
        raise ValueError(f"{op}: out must be writeable, got a read-only array")
    for name, a in inputs:
        if a is not None and _overlaps(out, a):
            raise ValueError(f"{op}: out must not share memory with {name}")


def _overlaps(a, b):
    if not np.may_share_memory(a, b):
        return False
    try:
        return np.shares_memory(a, b, max_work=100_000)
    except _TooHardError:
        return True


def check_method(method, op, winograd=None):
    """winograd: None where Winograd is allowed, else why the op refuses it."""
    if method not in METHODS:
        raise ValueError(f"{op}: method must be one of {', '.join(repr(m) for m in METHODS)}, "
                         f"got {method!r}")
    if winograd and method in WINOGRAD_METHODS:
        raise ValueError(f"{op}: method={method!r} is not supported here: {winograd}")


def check_winograd_geometry(method, kernel_size, stride, dilation, op):
    """Winograd applies to 3x3 kernels with stride 1 and dilation 1 only."""
    if method in WINOGRAD_METHODS and (tuple(kernel_size) != (3, 3) or stride != (1, 1) or
                                       dilation != (1, 1)):
        raise ValueError(f"{op}: method={method!r} needs a 3x3 kernel with stride 1 and "
                         f"dilation 1, got kernel_size={tuple(kernel_size)}, "
                         f"stride={stride}, dilation={dilation}")


def check_flag(value, name, op):
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")
