"""An independent float64 reference: direct loops over kernel offsets.

Deliberately shares no code with the package (no im2row, no sliding windows): for each kernel
tap (kh, kw) the strided slice of the zero-padded input it touches is multiplied into the
output. Slow, obviously correct, and different enough from every method under test that a
shared mistake is unlikely.
"""
import numpy as np


def pad_amounts(h, w, kh, kw, stride, padding, dilation):
    """Padding in every accepted form -> (top, bottom, left, right), written out from the
    definitions (PyTorch's symmetric padding, TensorFlow's "same")."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pads = []
        for size, k, s, d in ((h, kh, stride[0], dilation[0]), (w, kw, stride[1], dilation[1])):
            out = (size + s - 1) // s
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)
    if isinstance(padding, int):
        return (padding,) * 4
    ph, pw = padding
    ph = (ph, ph) if isinstance(ph, int) else tuple(ph)
    pw = (pw, pw) if isinstance(pw, int) else tuple(pw)
    return ph + pw


def zero_padded(x, pads):
    """x (N, C, H, W) inside zeros: pads = (top, bottom, left, right)."""
    n, c, h, w = x.shape
    pt, pb, pl, pr = pads
    xp = np.zeros((n, c, h + pt + pb, w + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + w] = x
    return xp


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """NCHW input (N, C, H, W), OIHW weight; returns float64 (N, OC, OH, OW)."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    n, c, h, w = x.shape
    oc, cg, kh, kw = weight.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    pt, pb, pl, pr = pad_amounts(h, w, kh, kw, (sh, sw), padding, (dh, dw))
    xp = zero_padded(x, (pt, pb, pl, pr))
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    ocg = oc // groups
    out = np.zeros((n, oc, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                tap = xg[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                         j * dw:j * dw + (ow - 1) * sw + 1:sw]          # (N, Cg, OH, OW)
                wt = weight[g * ocg:(g + 1) * ocg, :, i, j]            # (OCg, Cg)
                out[:, g * ocg:(g + 1) * ocg] += np.einsum("nchw,oc->nohw", tap, wt)
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def tolerance(dtype, depth):
    """Absolute tolerance for results of unit-scale data summed over `depth` = Cg*KH*KW terms:
    rounding error grows like sqrt(depth) times the unit roundoff (with margin)."""
    eps = np.finfo(dtype).eps
    return 16 * eps * np.sqrt(max(depth, 1)) * 4


def to_nhwc(x, weight):
    """NCHW/OIHW test data -> NHWC/HWIO."""
    return (np.ascontiguousarray(np.moveaxis(x, -3, -1)),
            np.ascontiguousarray(weight.transpose(2, 3, 1, 0)))


def conv_transpose2d_reference(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                               groups=1, dilation=1):
    """Transposed convolution by its definition, the scatter form: every input pixel adds
    weight[ci, co, kh, kw] * x into output (ih*s - pad + kh*d, iw*s - pad + kw*d). NCHW input,
    (C_in, C_out/groups, KH, KW) weight, padding an int/pair or ((top, bottom), (left,
    right)); returns float64."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    n, cin, h, w = x.shape
    _, coutg, kh, kw = weight.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    oph, opw = pair(output_padding)
    pt, pb, pl, pr = pad_amounts(h, w, kh, kw, (sh, sw), padding, (dh, dw))
    full_h = (h - 1) * sh + (kh - 1) * dh + 1 + oph
    full_w = (w - 1) * sw + (kw - 1) * dw + 1 + opw
    full = np.zeros((n, coutg * groups, full_h, full_w))
    cing = cin // groups
    for g in range(groups):
        xg = x[:, g * cing:(g + 1) * cing]
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,co->nohw", xg, weight[g * cing:(g + 1) * cing, :, i, j])
                full[:, g * coutg:(g + 1) * coutg, i * dh:i * dh + (h - 1) * sh + 1:sh,
                     j * dw:j * dw + (w - 1) * sw + 1:sw] += contrib
    out = full[:, :, pt:full_h - pb, pl:full_w - pr]
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :, None, None]
    return out


def conv2d_grad_weight_reference(x, grad_out, kernel, stride=1, padding=0, dilation=1,
                                 groups=1):
    """dL/dweight (OC, C/groups, KH, KW) of conv2d_reference by its definition: for each tap,
    the strided slice of the padded input it touched times grad_out, summed."""
    x = np.asarray(x, np.float64)
    gy = np.asarray(grad_out, np.float64)
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    pt, pb, pl, pr = pad_amounts(h, w, kh, kw, (sh, sw), padding, (dh, dw))
    xp = zero_padded(x, (pt, pb, pl, pr))
    _, oc, oh, ow = gy.shape
    cg, ocg = c // groups, oc // groups
    dw_ = np.zeros((oc, cg, kh, kw))
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, g * cg:(g + 1) * cg, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                         j * dw:j * dw + (ow - 1) * sw + 1:sw]
                dw_[g * ocg:(g + 1) * ocg, :, i, j] = np.einsum(
                    "nchw,nohw->oc", tap, gy[:, g * ocg:(g + 1) * ocg])
    return dw_
