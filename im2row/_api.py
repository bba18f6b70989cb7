"""The public API: conv2d, the Conv2d plan, workspace_bytes, im2row/im2col, backend_info.

The layer is thin on purpose: check every argument (``_args``), pick a method, and hand
C-contiguous arrays to either the compiled kernels (``_native``) or the NumPy code
(``_numpy_conv``).
"""
import math
import threading
import time

import numpy as np

from . import _backend
from ._args import (WINOGRAD_METHODS, check_array, check_bias, check_conv_args, check_flag,
                    check_layout, check_method, check_num_threads, check_out, check_same_dtype,
                    check_winograd_geometry, make_spec, parse_pair, parse_padding, _exact, _int)
from ._numpy_conv import (conv_im2col, conv_numpy, im2col_bytes, lower_im2col, lower_im2row,
                          numpy_chunk)

__version__ = "0.1.0"

COMPILED_METHODS = ("i2r", "im2row", "blocked")
WINOGRAD_TILES = {"winograd2": 2, "winograd4": 4}   # what "winograd" resolves to per shape
ACTIVATIONS = (None, "relu")
# What tuning plans measured: (geometry, threads, kernel level, dtype) -> the compiled method
# "auto" runs there. Only methods whose results are bit-identical compete (see
# tuning_candidates), so what is stored changes speeds, never a result.
_WISDOM = {}
TUNE_MARGIN = 1.05   # another method replaces the planner's choice only when this much faster
# Plain stores or streamed, per (geometry, threads, ISA, dtype, method): see _plain_stores.
# STORE_MODE: None times them; "streamed" or "plain" forces one (tests of both paths).
_STORES = {}
STORE_MODE = None
STORE_TIMING_MAX_BYTES = 64 << 20   # larger results stream untimed (four extra runs cost)
# conv2d calls that passed every check, by their exact arguments (see one_shot_key): what the
# checks decided (the plan's settings, spec, method, packing), so that the next such call
# skips them (~15 us, a lot next to a small convolution). Only shapes, dtypes and exact
# int/str/bool arguments are keys; the arrays are read anew by every call.
_ONE_SHOTS = {}
_ONE_SHOTS_MAX = 256


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
    method : {"auto", "i2r", "im2row", "blocked", "im2col", "numpy", "winograd", "winograd2", \
"winograd4"}
        As in ``conv2d``.
    activation : {None, "relu"}
        Fused into the kernels' epilogue.
    allow_winograd : bool, default False
        As in ``conv2d``.
    tune : bool, default False
        With ``method="auto"``: the first call on each input shape (and thread count) also
        times the compiled methods whose results are bit-identical to the planner's choice
        there (NHWC, at least 32 channels per group: "i2r" and "blocked") and keeps the
        fastest, in this plan and for every later "auto" call in the process (``conv2d``
        included). Results never depend on it; only that first call is slower.

    The plan keeps its own copy of the weights: changing ``weight`` afterwards does not change
    the plan. Calling one plan from several Python threads at once is safe. The first call
    (of any plan or ``conv2d``) on a geometry whose results the kernels would stream past the
    caches also times plain stores against streaming there and keeps the faster for the
    process: results never depend on it; only that call is slower.

    Examples
    --------
    >>> import numpy as np, im2row
    >>> w = np.ones((4, 3, 3, 3), np.float32)
    >>> plan = im2row.Conv2d(w, padding=1)
    >>> plan(np.ones((1, 3, 8, 8), np.float32)).shape
    (1, 4, 8, 8)
    """

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                 layout="NCHW", method="auto", activation=None, tune=False,
                 allow_winograd=False):
        self._setup(weight, bias, stride, padding, dilation, groups, layout, method,
                    activation, "Conv2d", copy=True, allow_winograd=allow_winograd)
        check_flag(tune, "tune", "Conv2d")
        self.tune = tune
        if method in WINOGRAD_TILES:
            self._winograd_for(WINOGRAD_TILES[method], 1, "Conv2d")
        elif method not in ("numpy", "im2col", "winograd") and _backend.native is not None:
            # "i2r" wants a copy of the weights per strip rotation where the kernel is packed
            # that way (fewer than 32 channels per group); "auto" packs those only when it first
            # runs "i2r"
            self._packed = self._pack(method == "i2r", False, _backend.isa(), 1, "Conv2d")

    def _setup(self, weight, bias, stride, padding, dilation, groups, layout, method,
               activation, op, copy, allow_winograd=False):
        """Check the arguments that do not depend on the input and keep them. copy: keep a
        copy of weight and bias (a plan); else read the caller's arrays (one call)."""
        check_layout(layout, op)
        check_method(method, op)
        check_flag(allow_winograd, "allow_winograd", op)
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
        check_winograd_geometry(method, (kh, kw), self.stride, self.dilation, op)
        if method in COMPILED_METHODS + WINOGRAD_METHODS:
            _backend.require_native(method)
        self.padding, self.groups, self.layout = padding, groups, layout
        self.method, self.activation = method, activation
        self.allow_winograd = allow_winograd
        self._one_shot = not copy   # conv2d's: packed weights serve one call
        self.dtype = weight.dtype
        if copy:
            self.weight = np.array(weight, order="C", copy=True)
            self.weight.flags.writeable = False
            self.bias = None if bias is None else np.array(bias, copy=True)
        else:
            self.weight = np.ascontiguousarray(weight)
            self.bias = None if bias is None else np.ascontiguousarray(bias)
        self.in_channels, self.out_channels = cg * groups, oc
        self.kernel_size = (kh, kw)
        self._packed = None
        self._nonfinite = None  # see _nonfinite_taps
        self._winograd = {}    # tile -> WinogradWeights, packed on first use
        self.tune = False
        self._tuned = set()    # (x_shape, nthreads) whose candidates were timed
        self._prepared = {}    # see _prepare
        self._lock = threading.Lock()

    @classmethod
    def _one_call(cls, x, weight, bias, stride, padding, dilation, groups, layout, method,
                  nthreads, op, allow_winograd=False):
        """A plan for one call on x: the caller's weights read in place (nothing keeps them
        past the call), packed only as the method chosen for x's shape needs, by nthreads
        threads."""
        self = cls.__new__(cls)
        self._setup(weight, bias, stride, padding, dilation, groups, layout, method, None, op,
                    copy=False, allow_winograd=allow_winograd)
        if method not in ("numpy", "im2col") and _backend.native is not None:
            spec, chosen, geometry = self._prepare(x.shape, nthreads, op)
            if not (spec.n * spec.oc * spec.oh * spec.ow and spec.c * spec.h * spec.w):
                return self   # nothing for a kernel to do
            if chosen in WINOGRAD_TILES:
                self._winograd_for(WINOGRAD_TILES[chosen], nthreads, op)
            elif chosen in COMPILED_METHODS:
                self._pack_flags = _backend.native.pack_flags(
                    geometry, chosen, _backend.isa(), spec.dtype.itemsize == 8)
                rotations, rows_only, deferred = self._pack_flags
                self._packed = self._pack(rotations, rows_only, _backend.isa(), nthreads, op,
                                          deferred)
        return self

    # what _one_call sets that depends on the arguments' values only (no arrays, no state)
    _SETTINGS = ("padding", "groups", "layout", "method", "activation", "allow_winograd",
                 "_one_shot", "dtype", "in_channels", "out_channels", "kernel_size", "stride",
                 "dilation", "tune")

    def _one_shot_entry(self, x_shape, nthreads):
        """What a later conv2d call with the same exact arguments may reuse (see _ONE_SHOTS),
        or None where it runs no packed compiled kernel."""
        prepared = self._prepared.get((x_shape, nthreads))
        if self._packed is None or prepared is None or prepared[1] not in COMPILED_METHODS:
            return None
        return ({k: self.__dict__[k] for k in self._SETTINGS}, prepared, self._pack_flags)

    @classmethod
    def _from_entry(cls, entry, x_shape, weight, bias, nthreads, op):
        """_one_call from a stored entry: the same plan without the checks, or None if a tuning
        plan has since stored another method for this geometry (the entry is then stale)."""
        settings, (spec, method, geometry), pack = entry
        if settings["method"] == "auto" and _WISDOM.get(
                wisdom_key(spec, geometry, nthreads), method) != method:
            return None
        self = cls.__new__(cls)
        self.__dict__.update(settings)
        self.weight = np.ascontiguousarray(weight)
        self.bias = None if bias is None else np.ascontiguousarray(bias)
        self._winograd, self._tuned, self._lock = {}, set(), threading.Lock()
        self._nonfinite = None  # the caller's weights: looked at anew
        self._prepared = {(x_shape, nthreads): (spec, method, geometry)}
        self._pack_flags = pack
        self._packed = self._pack(pack[0], pack[1], _backend.isa(), nthreads, op, pack[2])
        return self

    def _pack(self, rotations, rows_only, isa, nthreads, op, deferred=False):
        try:
            return _backend.native.PackedWeights(
                self.weight, self.layout, self.groups, self.bias, self.stride, self.dilation,
                rotations, self.activation == "relu", isa, rows_only, nthreads, deferred)
        except _backend.native.SizeError as e:
            raise ValueError(f"{op}: {e}") from None

    def _winograd_for(self, tile, nthreads, op):
        """The weights transformed for Winograd F(tile x tile, 3x3), packed on first use."""
        packed = self._winograd.get(tile)
        if packed is None:
            with self._lock:
                packed = self._winograd.get(tile)
                if packed is None:
                    try:
                        packed = _backend.native.WinogradWeights(
                            self.weight, self.layout, self.groups, self.bias, tile,
                            self.activation == "relu", _backend.isa(), nthreads)
                    except _backend.native.SizeError as e:
                        raise ValueError(f"{op}: {e}") from None
                    self._winograd[tile] = packed
        return packed

    def _packed_for(self, method):
        """The packed weights a compiled method runs with (packing the rotations on the
        first "i2r" call of an "auto" plan; the rotated copy serves every method after)."""
        packed = self._packed
        if method == "i2r" and not packed.rotations:
            with self._lock:
                if not self._packed.rotations:
                    self._packed = self._pack(True, False, self._packed.isa, 1, "Conv2d")
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
        geometry = spec_geometry(spec)
        method = self._resolve(spec, geometry)
        if self.method == "auto" and method in COMPILED_METHODS:
            method = _WISDOM.get(wisdom_key(spec, geometry, nthreads), method)
        if method in COMPILED_METHODS + tuple(WINOGRAD_TILES):
            check_kernel_sizes(spec, geometry, method, nthreads, op)
        if len(self._prepared) >= 64:   # bounded: plans may see many input sizes
            self._prepared.clear()
        self._prepared[key] = hit = (spec, method, geometry)
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
        if self.tune and (x.shape, nthreads) not in self._tuned:
            method = self._tune(x, spec, method, geometry, nthreads, op)
        if out is None:
            out = empty_aligned(spec.out_shape, spec.dtype)
        else:
            check_out(out, spec, (("x", x),) + tuple(caller_inputs), op)
        if method in COMPILED_METHODS + tuple(WINOGRAD_TILES):
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
            self._nan_at_nonfinite_padding_taps(out4, spec)
        elif method == "numpy":
            conv_numpy(x4, self.weight, self.bias, spec, out4)
        elif method == "im2col":
            conv_im2col(x4, self.weight, self.bias, spec, out4)
        elif method in WINOGRAD_TILES:
            ws, copied, threads = self._winograd_for(WINOGRAD_TILES[method], nthreads, op).run(
                _kernel_input(x4), out4, geometry, nthreads, _backend.debug_strip)
            info.update(workspace=ws, copied=copied * spec.dtype.itemsize, threads=threads)
            return out, info
        else:
            packed, xk = self._packed_for(method), _kernel_input(x4)
            plain = self._plain_stores(packed, xk, out4, spec, method, geometry, nthreads)
            ws, copied, threads = packed.run(xk, out4, geometry, method, nthreads,
                                             _backend.debug_strip, plain)
            if method in ("i2r", "blocked"):   # they skip taps that read padding
                self._nan_at_nonfinite_padding_taps(out4, spec)
            info.update(workspace=ws, copied=copied * spec.dtype.itemsize, threads=threads)
            return out, info
        if self.activation == "relu":
            np.maximum(out, 0, out=out)
        return out, info

    def backward(self, grad_out, x, needs=("input", "weight", "bias"), num_threads=None):
        """Gradients of this plan's convolution at x (see im2row.conv2d_backward): returns
        (grad_input, grad_weight, grad_bias), None for what ``needs`` leaves out. The input
        gradient's phase plans are built on the first call and kept."""
        from ._backward import conv2d_plan_backward
        return conv2d_plan_backward(self, grad_out, x, needs, num_threads)

    def _tune(self, x, spec, method, geometry, nthreads, op):
        """Time the candidates of an "auto" call (tuning_candidates) on x, keep the fastest
        (the planner's choice unless another is TUNE_MARGIN faster); returns it."""
        key = (x.shape, nthreads)
        candidates = (tuning_candidates(spec, geometry, method)
                      if x.size and self.method == "auto" else ())
        if len(candidates) > 1:
            x4 = _kernel_input(x if spec.batched else x[None])
            out4 = empty_aligned((spec.n,) + spec.out_shape[-3:], spec.dtype)
            times = {}
            for m in candidates:
                packed = self._packed_for(m)
                packed.run(x4, out4, geometry, m, nthreads, False)   # warm: caches, pages
                best = float("inf")
                for _ in range(2):
                    t0 = time.perf_counter()
                    packed.run(x4, out4, geometry, m, nthreads, False)
                    best = min(best, time.perf_counter() - t0)
                times[m] = best
            fastest = min(times, key=times.get)
            if times[fastest] * TUNE_MARGIN < times[method]:
                method = fastest
            _WISDOM[wisdom_key(spec, geometry, nthreads)] = method
            self._prepared[key] = (spec, method, geometry)
        self._tuned.add(key)
        return method

    def _plain_stores(self, packed, xk, out4, spec, method, geometry, nthreads):
        """Whether this call stores its results plainly where the planner streams them past
        the caches: timed both ways on the first such call of a geometry, method and thread
        count in the process (the kernel itself: a probe of the stores alone measured the
        opposite of the kernels on the Zen 3; see README), then remembered. Either way the
        same bits; streaming is kept unless plain stores are TUNE_MARGIN faster."""
        if STORE_MODE is not None:
            return STORE_MODE == "plain"
        key = wisdom_key(spec, geometry, nthreads) + (method,)
        plain = _STORES.get(key)
        if plain is None:
            plain = False
            if out4.nbytes <= STORE_TIMING_MAX_BYTES and packed.streams(geometry, method,
                                                                        nthreads):
                best = {False: float("inf"), True: float("inf")}
                for mode in (False, True, False, True):   # each once untimed first
                    packed.run(xk, out4, geometry, method, nthreads, False, mode)
                    t0 = time.perf_counter()
                    packed.run(xk, out4, geometry, method, nthreads, False, mode)
                    best[mode] = min(best[mode], time.perf_counter() - t0)
                plain = best[True] * TUNE_MARGIN < best[False]
            if len(_STORES) >= 1024:
                _STORES.clear()
            _STORES[key] = plain
        return plain

    def _add_bias(self, out4, spec):
        if self.bias is not None:
            if spec.layout == "NCHW":
                out4 += self.bias[:, None, None]
            else:
                out4 += self.bias

    def _nonfinite_taps(self):
        """Bool (OC, KH, KW): the taps where some input channel's weight is Inf or NaN, or
        None if every weight is finite. A plan's weights are its own, so it looks once; a
        conv2d call looks at the caller's weights on each call."""
        if self._nonfinite is None:
            w = self.weight
            if np.isfinite(w).all():
                self._nonfinite = False
            else:
                bad = ~np.isfinite(w)
                taps = (bad.any(axis=1) if self.layout == "NCHW"
                        else bad.any(axis=2).transpose(2, 0, 1))
                self._nonfinite = taps if taps.any() else False
        return None if self._nonfinite is False else self._nonfinite

    def _nan_at_nonfinite_padding_taps(self, out4, spec):
        """Set NaN where a tap with an Inf or NaN weight reads padding: zero padding times
        Inf is NaN in the definition (and in im2col, "im2row", "numpy"), but the kernels that
        skip padding taps ("i2r"'s strip, "blocked" on small maps, an empty image) never form
        the product. Costs one pass over the weights or, where smaller, the results (see
        below) when there is padding; more only with non-finite values."""
        top, bottom, left, right = spec.padding
        if not (top or bottom or left or right):
            return
        (sh, sw), (dh, dw) = spec.stride, spec.dilation
        ih = np.arange(spec.oh)[:, None] * sh - top + np.arange(spec.kh) * dh    # (OH, KH)
        iw = np.arange(spec.ow)[:, None] * sw - left + np.arange(spec.kw) * dw   # (OW, KW)
        row_pad, col_pad = (ih < 0) | (ih >= spec.h), (iw < 0) | (iw >= spec.w)
        # A non-finite weight times any input is Inf or NaN, and so stays every sum it enters:
        # where each tap reads input somewhere and no ReLU clips, all-finite results mean that
        # no weight was Inf or NaN: a one-off call, whose weights would be looked at anew each
        # time (a plan looks once), looks at its results where they are fewer.
        if (self._one_shot and self.activation is None and
                out4.size < self.weight.size and not row_pad.all(axis=0).any() and
                not col_pad.all(axis=0).any() and np.isfinite(out4).all()):
            return
        taps = self._nonfinite_taps()
        if taps is None:
            return
        o = out4 if spec.layout == "NHWC" else out4.transpose(0, 2, 3, 1)   # a view
        for kh, kw in zip(*np.nonzero(taps.any(axis=0))):   # only the border: no big mask
            ocs = np.flatnonzero(taps[:, kh, kw])[None, :]
            o[:, np.flatnonzero(row_pad[:, kh])[:, None], :, ocs] = np.nan
            o[:, :, np.flatnonzero(col_pad[:, kw])[:, None], ocs] = np.nan

    def _resolve(self, spec, geometry):
        return resolve_method(self.method, spec, geometry, self.allow_winograd, self._one_shot)

    def __repr__(self):
        return (f"Conv2d(in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}, "
                f"dilation={self.dilation}, groups={self.groups}, layout={self.layout!r}, "
                f"method={self.method!r}, activation={self.activation!r}, dtype={self.dtype})")


def resolve_method(method, spec, geometry, allow_winograd, one_shot):
    """The method a call runs: "auto" -> the C planner's choice (Winograd only where allowed
    and the planner prefers it; one_shot: counting the weights' transform for this call),
    "winograd" -> the tile the planner picks for this shape."""
    native = _backend.native
    if method == "auto":
        if native is None:
            return "numpy"
        if not (allow_winograd and native.winograd_preferred(
                geometry, _backend.isa(), spec.dtype.itemsize == 8, one_shot)):
            return choose_compiled_method(spec, geometry)
        method = "winograd"
    if method == "winograd":
        return f"winograd{native.winograd_tile(geometry, _backend.isa(), spec.dtype.itemsize == 8)}"
    return method


def choose_compiled_method(spec, geometry):
    """What "auto" runs when the extension is there: the C planner's choice."""
    return _backend.native.choose_method(geometry, _backend.isa(), spec.dtype.itemsize == 8)


def wisdom_key(spec, geometry, nthreads):
    return geometry, nthreads, _backend.isa(), spec.dtype.char


def tuning_candidates(spec, geometry, method):
    """The compiled methods a tuning plan may time against the planner's `method`: those that
    sum every output's products in the same order, so that any of them gives the same bits
    (tests/test_conv_grid.py::test_compiled_methods_sum_in_one_order). The C planner knows
    where: "i2r" and "blocked" on NHWC with enough channels per group (fewer pack the strip's
    rotations apart; depthwise layers always run "i2r", whose ring of rows or channel planes
    lowering cannot match; NCHW "blocked" is W*X, in the OIHW order)."""
    if method not in ("i2r", "blocked") or not _backend.native.one_sum_order(
            geometry, _backend.isa(), spec.dtype.itemsize == 8):
        return ()
    return ("i2r", "blocked")


def check_kernel_sizes(spec, geometry, method, nthreads, op):
    """ValueError if a buffer of the compiled call would need 2**62 bytes or more (the C
    planner sizes them: the same code that allocates them)."""
    if spec.n * spec.oc * spec.oh * spec.ow == 0 or spec.c * spec.h * spec.w == 0:
        return   # nothing to lower: no kernel runs
    try:
        kernel_prediction(spec, geometry, method, nthreads)
    except _backend.native.SizeError as e:
        raise ValueError(f"{op}: {e}") from None


def kernel_prediction(spec, geometry, method, nthreads):
    """(workspace, packed-weight bytes, values copied) of a compiled call, from the C
    planner."""
    f64 = spec.dtype.itemsize == 8
    if method in WINOGRAD_TILES:
        return _backend.native.winograd_predict(geometry, WINOGRAD_TILES[method], nthreads,
                                                _backend.isa(), f64, True)
    return _backend.native.predict(geometry, method, nthreads, _backend.isa(), f64,
                                   method == "i2r", True)


def _kernel_input(x):
    """x as the kernels read it: C-contiguous with aligned elements (x itself when it is: the
    common case, checked without np.require's few microseconds)."""
    flags = x.flags
    return x if flags.c_contiguous and flags.aligned else np.array(x, order="C", copy=True)


def empty_aligned(shape, dtype, alignment=64):
    """np.empty, but on a cache-line boundary (NumPy gives 16 bytes): the kernels stream large
    results past the caches with full-vector stores, which need it."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize   # Python ints: np.prod took 3 us a call
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def spec_geometry(spec, col_origin=0):
    """The tuple the extension's kernels take. col_origin: the global index of output column
    0 when the call computes a window of a larger output (im2row.dask), so that "i2r" sums
    each column exactly as the whole call does."""
    pt, pb, pl, pr = spec.padding
    return (spec.n, spec.c, spec.h, spec.w, spec.oc, spec.kh, spec.kw, spec.groups,
            spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1],
            pt, pb, pl, pr, spec.oh, spec.ow, spec.layout == "NHWC", col_origin)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCHW",
           method="auto", out=None, num_threads=None, allow_winograd=False):
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
    method : {"auto", "i2r", "im2row", "blocked", "im2col", "numpy", "winograd", \
"winograd2", "winograd4"}, default "auto"
        "i2r": the reusable im2row strip (compiled). "im2row": the full im2row matrix (compiled).
        "blocked": the im2row matrix lowered one cache-sized block at a time, as the GEMM
        needs it (compiled; best for small feature maps).
        "im2col": column matrix + NumPy matmul. "numpy": chunked im2row in NumPy.
        "winograd2", "winograd4": Winograd's minimal filtering F(2x2, 3x3) / F(4x4, 3x3)
        (compiled; 3x3 kernels, stride 1, dilation 1 only): 2.25x / 4x fewer multiplications,
        not exact: see README ("Winograd") for the measured error. "winograd": the tile size
        the planner picks for the shape.
        "auto": the best exact compiled method, or "numpy" without the extension.
    allow_winograd : bool, default False
        With ``method="auto"``: also let the planner run Winograd where it is faster (3x3,
        stride 1, dilation 1, at least 16 channels in and out per group). Off by default
        because its results are not exact.
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
    nthreads = check_num_threads(num_threads, op) or _backend.cpu_count()
    key = one_shot_key(x, weight, bias, stride, padding, dilation, groups, layout, method,
                       allow_winograd, nthreads)
    entry = _ONE_SHOTS.get(key) if key is not None else None
    plan = entry and Conv2d._from_entry(entry, x.shape, weight, bias, nthreads, op)
    if plan is None:
        check_method(method, op)
        check_conv_args(x, weight, bias, stride, padding, dilation, groups, layout, op)
        plan = Conv2d._one_call(x, weight, bias, stride, padding, dilation, groups, layout,
                                method, nthreads, op, allow_winograd)
        entry = key is not None and plan._one_shot_entry(x.shape, nthreads)
        if entry:
            if len(_ONE_SHOTS) >= _ONE_SHOTS_MAX:
                _ONE_SHOTS.clear()
            _ONE_SHOTS[key] = entry
    return plan._run(x, out, num_threads, op, (("weight", weight), ("bias", bias)))[0]


def one_shot_key(x, weight, bias, stride, padding, dilation, groups, layout, method,
                 allow_winograd, nthreads):
    """The key of a conv2d call in _ONE_SHOTS, or None if it is not memoised: plain ndarrays
    (no subclasses), exact int/str arguments (as make_spec's memo), a bool flag; the kernel
    level, which tests may switch, is part of it."""
    if (type(x) is not np.ndarray or type(weight) is not np.ndarray or
            (bias is not None and type(bias) is not np.ndarray) or
            type(allow_winograd) is not bool or _backend.native is None):
        return None
    key = (_exact(stride), _exact(padding), _exact(dilation), _exact(groups), _exact(layout),
           _exact(method))
    if None in key:
        return None
    return key + (x.shape, x.dtype, weight.shape, weight.dtype,
                  None if bias is None else (bias.shape, bias.dtype), allow_winograd,
                  nthreads, _backend.isa())


def workspace_bytes(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, *,
                    layout="NCHW", method="auto", num_threads=None, dtype=np.float32,
                    allow_winograd=False):
    """Memory a conv2d call would use, without running it.

    Returns a dict: ``workspace`` (scratch bytes of one call, all threads together),
    ``packed_weights`` (bytes of the packed weight copy), ``copied`` (bytes written into
    lowering buffers per call), and ``method`` (the method "auto" resolves to).
    """
    op = "workspace_bytes"
    check_method(method, op)
    check_flag(allow_winograd, "allow_winograd", op)
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
    geometry = spec_geometry(spec)
    check_winograd_geometry(method, (spec.kh, spec.kw), spec.stride, spec.dilation, op)
    if method in WINOGRAD_METHODS:
        _backend.require_native(method)
    method = resolve_method(method, spec, geometry, allow_winograd, one_shot=True)
    itemsize = dtype.itemsize
    if spec.n * spec.oc * spec.oh * spec.ow == 0 or spec.c * spec.h * spec.w == 0:
        # nothing to lower: the result is empty or bias only, computed without scratch
        return {"workspace": 0, "packed_weights": 0, "copied": 0, "method": method}
    if method in COMPILED_METHODS + tuple(WINOGRAD_TILES):
        _backend.require_native(method)
        check_kernel_sizes(spec, geometry, method, nthreads, op)
        ws, packed, copied = kernel_prediction(spec, geometry, method, nthreads)
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
