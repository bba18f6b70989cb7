"""im2row on dask arrays: ``im2row.dask.conv2d``, the same convolution as ``im2row.conv2d``
on a (possibly larger than memory, possibly distributed) dask array, lazily.

Needs ``pip install "im2row[dask]"`` (dask[array] and distributed).

How the graph is built
----------------------
Chunks may split the batch and both spatial axes, in any sizes; the channel axis is made one
chunk (rechunked if it is not). Along each spatial axis, output pixel ``o`` reads the padded
input rows ``[o*s, o*s + ek)`` (s the stride, ek = (k - 1)*d + 1 the dilated kernel); it is
*anchored* at input row ``o*s - p0 + a`` with ``a = (ek - 1) // 2`` (p0 the padding before
the axis) and belongs to the output chunk of the input chunk that holds its anchor (anchors
in the padding go to the first or last chunk). So output chunk boundaries follow from the
input's and the stride: for stride 1 and "same" padding with an odd kernel they are the
input's own, and each block then needs ``a`` rows before it and ``ek - 1 - a`` after it.

Those halos come from dask's own overlap machinery: ``dask.array.overlap.overlap`` with the
depth ``(a, ek - 1 - a)`` per spatial axis and ``boundary="none"`` (dask rechunks first if a
chunk is smaller than the depth, and takes each halo from the neighbouring block). Input
blocks whose output chunk is empty (chunks smaller than the stride) are dropped
(``Array.blocks``), and ``map_blocks`` runs one task per output chunk on the overlapped
block. The task cuts exactly the rows and columns its outputs read out of the block and
pads it the way the whole array would be padded there (zero rows/columns only where the
window leaves the image), so no data is ever padded in memory but the kernels' own.

Bit-identical to the whole array
--------------------------------
Each chunk is computed with the method ``im2row.conv2d`` would choose for the *whole* array
(``"auto"`` depends on the output height, so it is resolved once, on the whole geometry).
The compiled methods sum every output pixel in the same order wherever it lies, except
``"i2r"``, whose order depends on the strip rotation of the output column: the task passes the
global index of its first output column (``i2r_geom.ow0``) so the rotation is that of the whole
call (kernels of 32+ channels per group walk the rotated slots in tap order and do not depend
on it). The result is bit-identical (``numpy.array_equal``) to ``im2row.conv2d`` on
the whole array for the compiled methods, whatever the chunking and thread counts. The NumPy
methods (``"numpy"``, ``"im2col"``; what ``"auto"`` runs without the extension) go through
NumPy's matmul, whose rounding may depend on the matrix sizes: there the chunks agree to
rounding, not bit for bit.

Weights and threads
-------------------
The weights, bias and arguments travel as one graph key (sent once to each worker, not once
per task); the first task in each process packs them into an ``im2row.Conv2d`` plan, kept in
a small module-level cache keyed by a token of weights and arguments, so each worker process
packs once. Each task runs the kernels with ``num_threads`` threads, or by default with the
worker's share of cores: on a ``distributed`` worker ``cores // nthreads`` (cores: the worker's
``"cores"`` resource if it declares one, else its nthreads, which is how dask sizes workers:
one kernel thread per task, as dask's own OMP_NUM_THREADS=1); with the local schedulers (threaded,
processes, synchronous) ``cpu_count // min(pool size, chunks)``, where the pool size is
``dask.config num_workers`` or the CPU count. Kernel threads x concurrent tasks therefore never
exceeds the cores.
"""
import math
import threading

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
except ImportError as exc:   # pragma: no cover  (tested in a subprocess without dask)
    raise ImportError(
        "im2row.dask needs dask: install it with pip install \"im2row[dask]\" (brings "
        f"dask[array] and distributed); the import failed with: {exc}") from exc

import numpy as np

from . import _backend
from ._api import (COMPILED_METHODS, Conv2d, check_kernel_sizes, choose_compiled_method,
                   spec_geometry)
from ._args import (DTYPES, check_array, check_bias, check_layout, check_method,
                    check_num_threads, check_same_dtype, make_spec)
from ._numpy_conv import conv_im2col, conv_numpy

__all__ = ["conv2d"]

_OP = "im2row.dask.conv2d"


class _Recipe:
    """What a task needs to build the plan: weights and arguments (picklable, small next to
    the data). One graph key holds it; tasks get it as an argument."""

    def __init__(self, weight, bias, stride, pads, dilation, groups, layout, method,
                 num_threads, nchunks, spec):
        self.weight, self.bias = weight, bias
        self.stride, self.pads, self.dilation = stride, pads, dilation
        self.groups, self.layout, self.method = groups, layout, method
        self.num_threads, self.nchunks = num_threads, nchunks
        self.h, self.w = spec.h, spec.w
        self.ekh = (spec.kh - 1) * spec.dilation[0] + 1
        self.ekw = (spec.kw - 1) * spec.dilation[1] + 1
        self.token = tokenize(weight, bias, stride, pads, dilation, groups, layout, method)

    def __dask_tokenize__(self):
        return (self.token, self.num_threads, self.nchunks)


# ---------------------------------------------------------------------------- worker side

_PLANS = {}            # token -> Conv2d (weights packed), per process
_PLANS_LOCK = threading.Lock()
_PLANS_MAX = 8
pack_count = 0         # plans built in this process (tests check "once per worker")


def _plan(recipe):
    global pack_count
    plan = _PLANS.get(recipe.token)
    if plan is None:
        with _PLANS_LOCK:
            plan = _PLANS.get(recipe.token)
            if plan is None:
                # padding 0: packing does not depend on it (each task passes its own)
                plan = Conv2d(recipe.weight, recipe.bias, recipe.stride, 0, recipe.dilation,
                              recipe.groups, layout=recipe.layout, method=recipe.method)
                if len(_PLANS) >= _PLANS_MAX:
                    _PLANS.pop(next(iter(_PLANS)))
                _PLANS[recipe.token] = plan
                pack_count += 1
    return plan


def _current_worker():
    try:
        from distributed import get_worker
    except ImportError:   # pragma: no cover
        return None
    try:
        return get_worker()
    except ValueError:    # not in a distributed task
        return None


def task_threads(nchunks):
    """Kernel threads for one task (see the module docstring): the worker's cores divided
    by the tasks it runs at once."""
    worker = _current_worker()
    if worker is not None:
        state = getattr(worker, "state", worker)
        slots = max(1, int(getattr(state, "nthreads", None) or worker.nthreads))
        resources = getattr(state, "total_resources", None) or {}
        cores = int(resources.get("cores", slots))
        return max(1, cores // slots)
    cores = _backend.cpu_count()
    slots = dask.config.get("num_workers", None) or cores
    return max(1, cores // max(1, min(int(slots), nchunks)))


def _axis_window(o0, o1, s, p0, ek, size):
    """Input rows [lo, hi) that outputs [o0, o1) read, and the padding (before, after)
    around them."""
    start, end = o0 * s - p0, (o1 - 1) * s + ek - p0
    lo, hi = min(max(start, 0), size), min(max(end, 0), size)
    if hi <= lo:                         # the windows lie in the padding only
        return lo, lo, 0, end - start
    return lo, hi, lo - start, end - hi


def _conv_block(block, recipe, htab, wtab, h_ax, w_ax, block_id=None):
    """One output chunk: block is the overlapped input block; htab/wtab give, per selected
    block along each spatial axis, (global index of the block's first row, o0, o1)."""
    (bh, o0h, o1h), (bw, o0w, o1w) = htab[block_id[h_ax]], wtab[block_id[w_ax]]
    sh, sw = recipe.stride
    pt, pb, pl, pr = recipe.pads
    lo_h, hi_h, ptop, pbot = _axis_window(o0h, o1h, sh, pt, recipe.ekh, recipe.h)
    lo_w, hi_w, pleft, pright = _axis_window(o0w, o1w, sw, pl, recipe.ekw, recipe.w)
    index = [slice(None)] * 4
    index[h_ax] = slice(lo_h - bh, hi_h - bh)
    index[w_ax] = slice(lo_w - bw, hi_w - bw)
    x = block[tuple(index)]
    plan = _plan(recipe)
    method = recipe.method
    spec = make_spec(x.shape, plan.weight.shape, plan.dtype, recipe.stride,
                     ((ptop, pbot), (pleft, pright)), recipe.dilation, recipe.groups,
                     recipe.layout, _OP)
    out = np.empty(spec.out_shape, spec.dtype)
    if x.size == 0:                     # only padding under these outputs
        out[...] = 0
        plan._add_bias(out, spec)
    elif method in COMPILED_METHODS:
        nthreads = recipe.num_threads or task_threads(recipe.nchunks)
        plan._packed_for(method).run(np.require(x, requirements=("C", "A")), out,
                                     spec_geometry(spec, o0w), method, nthreads,
                                     _backend.debug_strip)
    elif method == "im2col":
        conv_im2col(np.ascontiguousarray(x), plan.weight, plan.bias, spec, out)
    else:
        conv_numpy(np.ascontiguousarray(x), plan.weight, plan.bias, spec, out)
    return out


# ---------------------------------------------------------------------------- graph side

def _output_chunks(in_chunks, s, p0, a, out_size):
    """Per input chunk of one axis: (o0, o1), the outputs anchored in it."""
    bounds, b = [], 0
    for c in in_chunks:
        bounds.append(b)
        b += c
    starts = [0] + [min(out_size, max(0, -(-(bi + p0 - a) // s))) for bi in bounds[1:]]
    ends = starts[1:] + [out_size]
    return bounds, list(zip(starts, ends))


def _check_x(x, op):
    if not isinstance(x, da.Array):
        raise TypeError(f"{op}: x must be a dask.array.Array, got {type(x).__name__}; wrap "
                        f"a NumPy array with dask.array.from_array(x, chunks=...) or call "
                        f"im2row.conv2d")
    if x.dtype not in DTYPES:
        raise TypeError(f"{op}: x must have dtype float32 or float64, got {x.dtype}; "
                        f"convert it with x.astype(numpy.float32)")
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: expected x with 3 or 4 dimensions, got {x.ndim} "
                         f"dimensions with shape {x.shape}")
    if any(math.isnan(s) for s in x.shape):
        raise ValueError(f"{op}: x has unknown chunk sizes (shape {x.shape}); call "
                         f"x.compute_chunk_sizes() first")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCHW",
           method="auto", num_threads=None):
    """2-D convolution of a dask array: ``im2row.conv2d`` chunk by chunk, lazily.

    Parameters are those of ``im2row.conv2d`` (no ``out``), with ``x`` a ``dask.array.Array``
    ((N, C, H, W) or (C, H, W) for NCHW; (N, H, W, C) or (H, W, C) for NHWC) and ``weight``,
    ``bias`` NumPy arrays. Chunks may split the batch and spatial axes in any sizes; the
    channel axis is rechunked to one chunk. ``num_threads``: kernel threads per task
    (default: the worker's cores divided by its concurrent tasks).

    Returns a lazy dask array of the convolution, bit-identical to ``im2row.conv2d`` on the
    whole array for the compiled methods (see the module docstring); its chunks along the
    spatial axes follow the input's (the same chunks for stride 1 and "same" padding with an
    odd kernel), one chunk along the output channels. Every argument is checked here, before
    any task runs, with the errors of ``im2row.conv2d``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, im2row.dask
    >>> x = da.ones((1, 3, 64, 64), dtype=np.float32, chunks=(1, 3, 32, 32))
    >>> w = np.ones((8, 3, 3, 3), np.float32)
    >>> y = im2row.dask.conv2d(x, w, padding="same")
    >>> y.chunks[2:], float(y[0, 0, 10, 10].compute())
    (((32, 32), (32, 32)), 27.0)
    """
    op = _OP
    check_method(method, op, winograd="Winograd's rounding depends on where its tiles fall, so "
                 "the chunks' results would differ from the whole array's; use an exact method")
    check_layout(layout, op)
    _check_x(x, op)
    check_array(weight, "weight", op, (4,))
    check_same_dtype(x, weight.dtype, op)
    spec = make_spec(x.shape, weight.shape, x.dtype, stride, padding, dilation, groups,
                     layout, op)
    check_bias(bias, spec.oc, spec.dtype, op)
    nthreads = check_num_threads(num_threads, op)
    geometry = spec_geometry(spec)
    if method == "auto":
        method = ("numpy" if _backend.native is None
                  else choose_compiled_method(spec, geometry))
    if method in COMPILED_METHODS:
        _backend.require_native(method)
        check_kernel_sizes(spec, geometry, method, nthreads or _backend.cpu_count(), op)

    x4 = x if spec.batched else x[None]
    if layout == "NCHW":
        c_ax, h_ax, w_ax = 1, 2, 3
    else:
        h_ax, w_ax, c_ax = 1, 2, 3
    if x4.numblocks[c_ax] > 1:
        x4 = x4.rechunk({c_ax: -1})
    ekh = (spec.kh - 1) * spec.dilation[0] + 1
    ekw = (spec.kw - 1) * spec.dilation[1] + 1
    ah, aw = (ekh - 1) // 2, (ekw - 1) // 2
    depth = {0: 0, c_ax: 0, h_ax: (ah, ekh - 1 - ah), w_ax: (aw, ekw - 1 - aw)}
    g = da.overlap.overlap(x4, depth=depth, boundary="none")

    pt, pb, pl, pr = spec.padding
    tabs, sel, out_chunks = {}, {}, {}
    for ax, s, p0, a, ek, osize in ((h_ax, spec.stride[0], pt, ah, ekh, spec.oh),
                                    (w_ax, spec.stride[1], pl, aw, ekw, spec.ow)):
        n = len(g.chunks[ax])
        halo = (a, ek - 1 - a)
        # the overlapped blocks' core sizes: block i holds halo[0] rows before its core
        # (i > 0) and halo[1] after it (i < n - 1)
        core = [c - (halo[0] if i > 0 else 0) - (halo[1] if i < n - 1 else 0)
                for i, c in enumerate(g.chunks[ax])]
        bounds, ranges = _output_chunks(core, s, p0, a, osize)
        keep = [i for i, (o0, o1) in enumerate(ranges) if o1 > o0]
        sel[ax] = keep
        tabs[ax] = tuple((bounds[i] - (halo[0] if i > 0 else 0), *ranges[i]) for i in keep)
        out_chunks[ax] = tuple(ranges[i][1] - ranges[i][0] for i in keep)
    for ax in (h_ax, w_ax):   # (Array.blocks takes one list at a time)
        if len(sel[ax]) < g.numblocks[ax]:
            g = g.blocks[tuple(sel[ax] if a == ax else slice(None) for a in range(4))]
    nchunks = g.numblocks[0] * len(sel[h_ax]) * len(sel[w_ax])

    weight_c = np.array(weight, order="C", copy=True)
    bias_c = None if bias is None else np.array(bias, copy=True)
    recipe = _Recipe(weight_c, bias_c, spec.stride, spec.padding, spec.dilation, spec.groups,
                     layout, method, nthreads, nchunks, spec)
    recipe_key = dask.delayed(recipe, pure=True, traverse=False)
    chunks = [None] * 4
    chunks[0] = g.chunks[0]
    chunks[c_ax] = (spec.oc,)
    chunks[h_ax], chunks[w_ax] = out_chunks[h_ax], out_chunks[w_ax]
    y = da.map_blocks(_conv_block, g, recipe_key, tabs[h_ax], tabs[w_ax], h_ax, w_ax,
                      chunks=tuple(chunks), dtype=spec.dtype,
                      meta=np.empty((0, 0, 0, 0), spec.dtype),
                      name="im2row-conv2d-" + tokenize(g.name, recipe, method))
    return y if spec.batched else y[0]
