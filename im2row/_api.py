"""The public API: conv2d, the Conv2d plan, workspace_bytes, im2row/im2col, backend_info.

The layer is thin on purpose: check every argument (``_args``), pick a method, and hand
C-contiguous arrays to either the compiled kernels (``_native``) or the NumPy code
(``_numpy_conv``).
"""
import threading

import numpy as np

from . import _backend
from ._args import (check_array, check_bias, check_byte_count, check_conv_args,
                    check_kernel_sizes, check_layout, check_method, check_num_threads,
                    check_out, check_same_dtype, make_spec, parse_pair, parse_padding, _int)
from ._numpy_conv import (conv_im2col, conv_numpy, im2col_bytes, lower_im2col, lower_im2row,
                          numpy_chunk)

__version__ = "0.1.0"

COMPILED_METHODS = ("i2r", "im2row", "blocked")
ACTIVATIONS = (None, "relu")
# "auto": the strip's column GEMMs have OH rows. Below STRIP_MIN_ROWS rows, or when OH fills
# the register tiles (MR rows) poorly, GEMMs over whole images' im2row rows (small images
# stacked), lowered block by block ("blocked"), are faster.
STRIP_MIN_ROWS = 28
STRIP_MIN_TILE_FILL = 0.75
TILE_ROWS = {"generic": 4, "avx2": 6, "avx512": 14}


class Conv2d:
    """A convolution plan: checks and packs the weights once, then runs on any input size.

    Parameters
    ----------
    weight : ndarray, float32 or float64
        (OC, C/groups, KH, KW) for ``layout="NCHW"``, (KH, KW, C/groups, OC) for ``"NHWC"``.
    bias : ndarray of shape (OC,), optional
    stride, dilation : int or (int, int), default 1
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same", default 0
    groups : int, default 1
    layout : {"NCHW", "NHWC"}
    method : {"auto", "i2r", "im2row", "blocked", "im2col", "numpy"}
    activation : {None, "relu"}
        Fused into the kernels' epilogue.

    The plan keeps its own copy of the weights: changing ``weight`` afterwards does not change
    the plan. Calling one plan from several Python threads at once is safe.

    Examples
    --------
    >>> import numpy as np, im2row
    >>> w = np.ones((4, 3, 3, 3), np.float32)
    >>> plan = im2row.Conv2d(w, padding=1)
    >>> plan(np.ones((1, 3, 8, 8), np.float32)).shape
    (1, 4, 8, 8)
    """

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                 layout="NCHW", method="auto", activation=None):
        op = "Conv2d"
        check_layout(layout, op)
        check_method(method, op)
        check_array(weight, "weight", op, (4,))
        if activation not in ACTIVATIONS:
            raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
        groups = _int(groups, "groups", op)
        if groups < 1:
            raise ValueError(f"{op}: groups must be a positive int, got {groups}")
        if layout == "NCHW":
            oc, cg, kh, kw = weight.shape
        else:
            kh, kw, cg, oc = weight.shape
        if oc % groups:
            raise ValueError(f"{op}: groups={groups} must divide the {oc} output channels "
                             f"of weight with shape {weight.shape}")
        self.stride = parse_pair(stride, "stride", op)
        self.dilation = parse_pair(dilation, "dilation", op)
        if not (isinstance(padding, str) and padding == "same"):
            parse_padding(padding, (0, 0), (1, 1), (1, 1), (1, 1), op)   # the form only
        check_bias(bias, oc, weight.dtype, op)
        if method in COMPILED_METHODS:
            _backend.require_native(method)
        self.padding, self.groups, self.layout = padding, groups, layout
        self.method, self.activation = method, activation
        self.dtype = weight.dtype
        self.weight = np.array(weight, order="C", copy=True)
        self.weight.flags.writeable = False
        self.bias = None if bias is None else np.array(bias, copy=True)
        self.in_channels, self.out_channels = cg * groups, oc
        self.kernel_size = (kh, kw)
        self._packed = None
        self._prepared = {}    # see _prepare
        self._lock = threading.Lock()
        if method not in ("numpy", "im2col") and _backend.native is not None:
            check_byte_count(groups * kw * kh * kw * cg * (oc // groups + 64),
                             weight.dtype.itemsize, "the packed weights", op,
                             2**62)
            # "i2r" needs a copy of the weights per strip rotation; the other methods only
            # the unrotated one. "auto" packs the rotations when it first runs "i2r".
            self._packed = self._pack(method == "i2r", _backend.isa())

    def _pack(self, rotations, isa):
        return _backend.native.PackedWeights(
            self.weight, self.layout, self.groups, self.bias, self.stride, self.dilation,
            rotations, self.activation == "relu", isa)

    def _packed_for(self, method):
        """The packed weights a compiled method runs with (packing the rotations on the
        first "i2r" call of an "auto" plan; the rotated copy serves every method after)."""
        packed = self._packed
        if method == "i2r" and not packed.rotations:
            with self._lock:
                if not self._packed.rotations:
                    self._packed = self._pack(True, self._packed.isa)
                packed = self._packed
        return packed

    def _spec(self, x_shape, op):
        return make_spec(x_shape, self.weight.shape, self.dtype, self.stride, self.padding,
                         self.dilation, self.groups, self.layout, op)

    def _prepare(self, x_shape, nthreads, op):
        """(spec, method, kernel geometry) of an input shape, checked once per shape and
        thread count and then remembered: the checks cost ~10 us a call, a lot next to a
        small convolution. Safe under threads (a racing miss only computes it twice)."""
        key = (x_shape, nthreads)
        hit = self._prepared.get(key)
        if hit is not None:
            return hit
        spec = self._spec(x_shape, op)
        method = self._resolve(spec)
        if method in COMPILED_METHODS:
            check_kernel_sizes(spec, nthreads, op)
        if len(self._prepared) >= 64:   # bounded: plans may see many input sizes
            self._prepared.clear()
        self._prepared[key] = hit = (spec, method, spec_geometry(spec))
        return hit

    def __call__(self, x, out=None, num_threads=None):
        """Convolve ``x`` ((N, C, H, W) or (C, H, W) for NCHW; (N, H, W, C) or (H, W, C) for
        NHWC); write into ``out`` if given. Returns the result."""
        return self._run(x, out, num_threads, "Conv2d")[0]

    def measure(self, x, out=None, num_threads=None):
        """Like calling the plan, but also returns what the call did: a dict with ``method``
        (what "auto" chose), and for the compiled methods ``workspace`` (scratch bytes the
        kernels allocated), ``copied`` (bytes they wrote into strips or im2row buffers) and
        ``threads``. Returns (result, dict)."""
        return self._run(x, out, num_threads, "Conv2d")

    def _run(self, x, out, num_threads, op, caller_inputs=()):
        """caller_inputs: the caller's own (name, array) pairs `out` must not overlap (conv2d
        passes its weight and bias; a plan holds copies)."""
        check_array(x, "x", op, (3, 4))
        check_same_dtype(x, self.dtype, op)
        nthreads = check_num_threads(num_threads, op) or _backend.cpu_count()
        spec, method, geometry = self._prepare(x.shape, nthreads, op)
        if out is None:
            out = np.empty(spec.out_shape, spec.dtype)
        else:
            check_out(out, spec, (("x", x),) + tuple(caller_inputs), op)
        if method in COMPILED_METHODS:
            if not out.flags.aligned:   # the kernels need aligned elements: go through a copy
                result, info = self._run(x, None, num_threads, op)
                out[...] = result
                return out, info
        x4 = x if spec.batched else x[None]
        out4 = out if spec.batched else out[None]
        info = {"method": method}
        if out.size == 0:
            return out, info
        if x.size == 0:                     # empty image: every window sees only padding
            out4[...] = 0
            self._add_bias(out4, spec)
        elif method == "numpy":
            conv_numpy(x4, self.weight, self.bias, spec, out4)
        elif method == "im2col":
            conv_im2col(x4, self.weight, self.bias, spec, out4)
        else:
            ws, copied, threads = self._packed_for(method).run(
                np.require(x4, requirements=("C", "A")), out4, geometry, method, nthreads,
                _backend.debug_strip)
            info.update(workspace=ws, copied=copied * spec.dtype.itemsize, threads=threads)
            return out, info
        if self.activation == "relu":
            np.maximum(out, 0, out=out)
        return out, info

    def _add_bias(self, out4, spec):
        if self.bias is not None:
            if spec.layout == "NCHW":
                out4 += self.bias[:, None, None]
            else:
                out4 += self.bias

    def _resolve(self, spec):
        if self.method != "auto":
            return self.method
        if self._packed is None:
            return "numpy"
        return choose_compiled_method(spec, self._packed.isa)

    def __repr__(self):
        return (f"Conv2d(in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}, "
                f"dilation={self.dilation}, groups={self.groups}, layout={self.layout!r}, "
                f"method={self.method!r}, activation={self.activation!r}, dtype={self.dtype})")


def choose_compiled_method(spec, isa):
    """What "auto" runs when the extension is there: "blocked" for pointwise convolutions (a
    GEMM on the input itself), else "i2r" unless the column GEMMs would be short or ragged
    (see STRIP_MIN_ROWS), then "blocked"."""
    if (spec.kh, spec.kw, spec.stride, spec.padding) == (1, 1, (1, 1), (0, 0, 0, 0)):
        return "blocked"    # pointwise: a plain GEMM on the input, no lowering at all
    mr = TILE_ROWS.get(isa, 4)
    tile_fill = spec.oh / (-(-spec.oh // mr) * mr)
    strip_ok = spec.oh >= STRIP_MIN_ROWS and tile_fill >= STRIP_MIN_TILE_FILL
    return "i2r" if strip_ok else "blocked"


def spec_geometry(spec, col_origin=0):
    """The tuple the extension's kernels take. col_origin: the global index of output column
    0 when the call computes a window of a larger output (im2row.dask), so that "i2r" sums
    each column exactly as the whole call does."""
    pt, pb, pl, pr = spec.padding
    return (spec.n, spec.c, spec.h, spec.w, spec.oc, spec.kh, spec.kw, spec.groups,
            spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1],
            pt, pb, pl, pr, spec.oh, spec.ow, spec.layout == "NHWC", col_origin)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCHW",
           method="auto", out=None, num_threads=None):
    """2-D convolution (cross-correlation, as in deep-learning frameworks).

    Parameters
    ----------
    x : ndarray, float32 or float64
        (N, C, H, W) or (C, H, W) for ``layout="NCHW"``; (N, H, W, C) or (H, W, C) for
        ``"NHWC"``. Any memory order; never modified.
    weight : ndarray, same dtype as x
        (OC, C/groups, KH, KW) for NCHW (PyTorch's order); (KH, KW, C/groups, OC) for NHWC
        (TensorFlow's HWIO).
    bias : ndarray of shape (OC,), optional
    stride, dilation : int or (int, int), default 1
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same", default 0
        "same" gives ceil(in / stride) outputs; an odd total goes at the bottom/right.
    groups : int, default 1
    layout : {"NCHW", "NHWC"}, default "NCHW"
    method : {"auto", "i2r", "im2row", "blocked", "im2col", "numpy"}, default "auto"
        "i2r": the reusable im2row strip (compiled). "im2row": the full im2row matrix (compiled).
        "blocked": the im2row matrix lowered one cache-sized block at a time, as the GEMM
        needs it (compiled; best for small feature maps).
        "im2col": column matrix + NumPy matmul. "numpy": chunked im2row in NumPy.
        "auto": the best compiled method, or "numpy" without the extension.
    out : ndarray, optional
        C-contiguous result buffer of the exact shape and dtype, sharing no memory with the
        inputs; written in place and returned.
    num_threads : int, optional
        Threads for the compiled methods (default: all available cores).

    Returns
    -------
    ndarray
        (N, OC, OH, OW) for NCHW or (N, OH, OW, OC) for NHWC (no N for unbatched input).

    Examples
    --------
    >>> import numpy as np, im2row
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2), np.float32)
    >>> im2row.conv2d(x, w)[0, 0]
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]], dtype=float32)
    """
    op = "conv2d"
    check_method(method, op)
    check_conv_args(x, weight, bias, stride, padding, dilation, groups, layout, op)
    check_num_threads(num_threads, op)
    plan = Conv2d(weight, bias, stride, padding, dilation, groups, layout=layout, method=method)
    return plan._run(x, out, num_threads, op, (("weight", weight), ("bias", bias)))[0]


def workspace_bytes(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, *,
                    layout="NCHW", method="auto", num_threads=None, dtype=np.float32):
    """Memory a conv2d call would use, without running it.

    Returns a dict: ``workspace`` (scratch bytes of one call, all threads together),
    ``packed_weights`` (bytes of the packed weight copy), ``copied`` (bytes written into
    lowering buffers per call), and ``method`` (the method "auto" resolves to).
    """
    op = "workspace_bytes"
    check_method(method, op)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
    shapes = []
    for name, shape, ndims in (("input_shape", input_shape, (3, 4)),
                               ("weight_shape", weight_shape, (4,))):
        if not isinstance(shape, (tuple, list)):
            raise TypeError(f"{op}: {name} must be a tuple of ints, got "
                            f"{type(shape).__name__}")
        sizes = tuple(_int(v, name, op) for v in shape)
        if len(sizes) not in ndims:
            raise ValueError(f"{op}: {name} must have {' or '.join(map(str, ndims))} entries, "
                             f"got {sizes}")
        if min(sizes) < 0:
            raise ValueError(f"{op}: {name} must not have negative sizes, got {sizes}")
        shapes.append(sizes)
    spec = make_spec(shapes[0], shapes[1], dtype, stride, padding, dilation, groups, layout,
                     op)
    nthreads = check_num_threads(num_threads, op) or _backend.cpu_count()
    if method == "auto":
        method = ("numpy" if _backend.native is None
                  else choose_compiled_method(spec, _backend.isa()))
    itemsize = dtype.itemsize
    if spec.n * spec.oc * spec.oh * spec.ow == 0 or spec.c * spec.h * spec.w == 0:
        # nothing to lower: the result is empty or bias only, computed without scratch
        return {"workspace": 0, "packed_weights": 0, "copied": 0, "method": method}
    if method in COMPILED_METHODS:
        native = _backend.require_native(method)
        check_kernel_sizes(spec, nthreads, op)
        ws, packed, copied = native.predict(spec_geometry(spec), method, nthreads,
                                            _backend.isa(), itemsize == 8, method == "i2r",
                                            True)
        return {"workspace": ws, "packed_weights": packed, "copied": copied * itemsize,
                "method": method}
    # both NumPy methods write every image's whole im2row (im2col) matrix, "numpy" a chunk
    # (lowered rows, matmul result, padded input slab) at a time
    col = im2col_bytes(spec)
    workspace = (col + spec.oc * spec.oh * spec.ow * itemsize if method == "im2col"
                 else numpy_chunk(spec)[1])
    return {"workspace": workspace, "packed_weights": 0, "copied": spec.n * col,
            "method": method}


def _lowering_spec(x, kernel_size, stride, padding, dilation, layout, op):
    check_layout(layout, op)
    check_array(x, "x", op, (3, 4))
    kh, kw = parse_pair(kernel_size, "kernel_size", op)
    c = x.shape[-3] if layout == "NCHW" else x.shape[-1]
    w_shape = (1, c, kh, kw) if layout == "NCHW" else (kh, kw, c, 1)
    spec = make_spec(x.shape, w_shape, x.dtype, stride, padding, dilation, 1, layout, op)
    return spec, (x if spec.batched else x[None])


def im2row(x, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW"):
    """The traditional im2row matrix: one row per output pixel, one column per kernel tap.

    Returns (N, OH*OW, C*KH*KW) ((OH*OW, C*KH*KW) for unbatched input). Rows are output pixels
    in row-major (oh, ow) order. Columns are in (c, kh, kw) order for NCHW, so that
    ``im2row(x, k) @ w.reshape(OC, -1).T`` is the convolution with PyTorch-layout weights, and
    in (kh, kw, c) order for NHWC, matching ``w.reshape(-1, OC)`` for HWIO weights.
    """
    spec, x4 = _lowering_spec(x, kernel_size, stride, padding, dilation, layout, "im2row")
    res = lower_im2row(x4, spec) if x4.size else np.zeros(
        (spec.n, spec.oh * spec.ow, spec.c * spec.kh * spec.kw), spec.dtype)
    return res if spec.batched else res[0]


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW"):
    """The im2col matrix, the transpose of ``im2row``: (N, C*KH*KW, OH*OW) (no N for unbatched
    input), rows in the same order as im2row's columns. For NCHW it equals PyTorch's
    ``torch.nn.functional.unfold``."""
    spec, x4 = _lowering_spec(x, kernel_size, stride, padding, dilation, layout, "im2col")
    res = lower_im2col(x4, spec) if x4.size else np.zeros(
        (spec.n, spec.c * spec.kh * spec.kw, spec.oh * spec.ow), spec.dtype)
    return res if spec.batched else res[0]


def backend_info():
    """What runs the convolutions here: a dict with ``compiled``, ``isa``, ``cpu_isa``,
    ``openmp``, ``max_threads``, ``version``, ``reason`` (why the extension is unavailable, or
    None) and ``numpy``."""
    native = _backend.native
    return {
        "compiled": native is not None,
        "isa": _backend.isa(),
        "cpu_isa": native.cpu_isa() if native else "none",
        "openmp": bool(native.openmp()) if native else False,
        "max_threads": _backend.cpu_count(),
        "version": __version__,
        "reason": _backend.unavailable_reason,
        "numpy": np.__version__,
    }
