"""The NumPy implementations: always available, no compiler needed.

* ``conv_numpy`` ("numpy"): im2row over chunks of output rows (sliding_window_view + matmul), so
  its scratch memory stays under ``CHUNK_BYTES`` whatever the image size.
* ``conv_im2col`` ("im2col"): the classic algorithm (one column matrix per image, then one
  matmul), kept as the baseline the other methods are measured against.
* ``lower_im2row`` / ``lower_im2col``: the lowered matrices themselves, for the public
  ``im2row.im2row`` and ``im2row.im2col``.

All functions take a batched (4-D) input and write into a batched, preallocated output.
"""
import os
import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

CHUNK_BYTES = 32 << 20       # scratch budget of one "numpy" chunk (lowered rows + padded slab)
IM2COL_WARN_BYTES = 1 << 30  # im2col warns above this column-matrix size...


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def padded_slab(img, spec, r0, r1):
    """Padded input rows [r0, r1) of one image (padded coordinates) as an (r1-r0, Wp, C) array."""
    pt, _, pl, pr = spec.padding
    slab = np.zeros((r1 - r0, spec.w + pl + pr, spec.c), spec.dtype)
    a, b = max(r0 - pt, 0), min(r1 - pt, spec.h)
    if b > a:
        src = img[:, a:b, :].transpose(1, 2, 0) if spec.layout == "NCHW" else img[a:b]
        slab[a + pt - r0:b + pt - r0, pl:pl + spec.w] = src
    return slab


def _windows(slab, spec):
    """(R, OW, C, KH, KW) view of the windows of the output rows a slab covers."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    ekh, ekw = (spec.kh - 1) * dh + 1, (spec.kw - 1) * dw + 1
    win = sliding_window_view(slab, (ekh, ekw), axis=(0, 1))
    return win[::sh, ::sw, :, ::dh, ::dw]


def weight_as_matrix(weight, layout, groups):
    """Weights as a C-contiguous (G, KH*KW*Cg, OCg) array, rows in (kh, kw, c) order."""
    if layout == "NCHW":   # (OC, Cg, KH, KW)
        oc, cg, kh, kw = weight.shape
        wm = weight.reshape(groups, oc // groups, cg, kh, kw).transpose(0, 3, 4, 2, 1)
    else:                  # (KH, KW, Cg, OC)
        kh, kw, cg, oc = weight.shape
        wm = weight.reshape(kh, kw, cg, groups, oc // groups).transpose(3, 0, 1, 2, 4)
    return np.ascontiguousarray(wm).reshape(groups, kh * kw * cg, oc // groups)


def _store_rows(out_img, res, spec, o0, o1):
    """res (G, (o1-o0)*OW, OCg) -> output rows [o0, o1) of one image."""
    g, ocg, ow = spec.groups, spec.ocg, spec.ow
    if spec.layout == "NCHW":
        out_img[:, o0:o1, :] = res.transpose(0, 2, 1).reshape(g * ocg, o1 - o0, ow)
    else:
        out_img[o0:o1] = res.transpose(1, 0, 2).reshape(o1 - o0, ow, g * ocg)


def numpy_chunk(spec):
    """Output rows per "numpy" chunk and its scratch bytes (lowered rows, matmul result and
    padded input slab), kept under CHUNK_BYTES where one output row allows."""
    k = spec.kh * spec.kw * spec.cg
    row_bytes = spec.ow * (spec.groups * k + 2 * spec.oc) * spec.dtype.itemsize
    rows = max(1, min(spec.oh, CHUNK_BYTES // max(row_bytes, 1)))
    slab_rows = (rows - 1) * spec.stride[0] + (spec.kh - 1) * spec.dilation[0] + 1
    wp = spec.w + spec.padding[2] + spec.padding[3]
    return rows, rows * row_bytes + slab_rows * wp * spec.c * spec.dtype.itemsize


def conv_numpy(x, weight, bias, spec, out):
    """The "numpy" method: im2row a chunk of output rows at a time."""
    sh, dh = spec.stride[0], spec.dilation[0]
    ekh = (spec.kh - 1) * dh + 1
    g, cg = spec.groups, spec.cg
    k = spec.kh * spec.kw * cg
    wm = weight_as_matrix(weight, spec.layout, g)
    bias_g = None if bias is None else bias.reshape(g, 1, spec.ocg)
    rows = numpy_chunk(spec)[0]
    for n in range(spec.n):
        for o0 in range(0, spec.oh, rows):
            o1 = min(o0 + rows, spec.oh)
            slab = padded_slab(x[n], spec, o0 * sh, (o1 - 1) * sh + ekh)
            win = _windows(slab, spec)                       # (R, OW, C, KH, KW)
            r = o1 - o0
            lowered = (win.reshape(r, spec.ow, g, cg, spec.kh, spec.kw)
                          .transpose(2, 0, 1, 4, 5, 3)
                          .reshape(g, r * spec.ow, k))       # copies: the im2row chunk
            res = np.matmul(lowered, wm)
            if bias_g is not None:
                res += bias_g
            _store_rows(out[n], res, spec, o0, o1)
    return out


def im2col_bytes(spec):
    """Bytes of the classic column matrix of one image."""
    return spec.c * spec.kh * spec.kw * spec.oh * spec.ow * spec.dtype.itemsize


def check_im2col_memory(spec, op="conv2d"):
    """im2col materialises KH*KW times the input: refuse what cannot fit, warn when it is huge."""
    need = im2col_bytes(spec)
    if need > _physical_memory() // 2:
        raise MemoryError(f"{op}: method='im2col' would need {need / 2**30:.1f} GiB for its "
                          f"column matrix, more than half of this machine's memory; use "
                          f"method='i2r' (or 'numpy'), whose buffers stay small")
    if need > IM2COL_WARN_BYTES:   # a RuntimeWarning: Python hides ResourceWarning by default
        warnings.warn(f"{op}: method='im2col' allocates a {need / 2**30:.1f} GiB column matrix; "
                      f"method='i2r' needs a small fraction of that", RuntimeWarning,
                      stacklevel=5)   # the caller of conv2d / Conv2d.__call__


def conv_im2col(x, weight, bias, spec, out):
    """The "im2col" baseline: per image, a (C*KH*KW, OH*OW) column matrix and one matmul."""
    check_im2col_memory(spec)
    g, ocg, cg = spec.groups, spec.ocg, spec.cg
    if spec.layout == "NCHW":
        wm = weight.reshape(g, ocg, cg * spec.kh * spec.kw)
    else:
        wm = weight.transpose(3, 2, 0, 1).reshape(g, ocg, cg * spec.kh * spec.kw)
    for n in range(spec.n):
        col = (_image_windows(x[n], spec).transpose(2, 3, 4, 0, 1)   # (C, KH, KW, OH, OW)
                  .reshape(g, cg * spec.kh * spec.kw, spec.oh * spec.ow))
        res = np.matmul(wm, col)                                # (G, OCg, OH*OW)
        res = res.reshape(spec.oc, spec.oh, spec.ow)
        if bias is not None:
            res += bias[:, None, None]
        if spec.layout == "NCHW":
            out[n] = res
        else:
            out[n] = res.transpose(1, 2, 0)
    return out


def _image_windows(img, spec):
    slab = padded_slab(img, spec, 0, spec.h + spec.padding[0] + spec.padding[1])
    return _windows(slab, spec)                              # (OH, OW, C, KH, KW)


def lower_im2row(x, spec):
    """(N, OH*OW, C*KH*KW): columns in (c, kh, kw) order for NCHW, (kh, kw, c) for NHWC."""
    k = spec.c * spec.kh * spec.kw
    res = np.empty((spec.n, spec.oh * spec.ow, k), spec.dtype)
    order = (0, 1, 2, 3, 4) if spec.layout == "NCHW" else (0, 1, 3, 4, 2)
    for n in range(spec.n):
        res[n] = _image_windows(x[n], spec).transpose(order).reshape(-1, k)
    return res


def lower_im2col(x, spec):
    """(N, C*KH*KW, OH*OW): the transpose of lower_im2row (rows in the same order as its
    columns); for NCHW it equals torch.nn.functional.unfold."""
    k = spec.c * spec.kh * spec.kw
    res = np.empty((spec.n, k, spec.oh * spec.ow), spec.dtype)
    order = (2, 3, 4, 0, 1) if spec.layout == "NCHW" else (3, 4, 2, 0, 1)
    for n in range(spec.n):
        res[n] = _image_windows(x[n], spec).transpose(order).reshape(k, -1)
    return res
