"""The training and decoder ops: conv2d_backward, conv_transpose2d, ConvTranspose2d.

Both run on the forward's kernels:

* The transposed convolution (and so the input gradient, which is one) is split by output
  phase: for stride s, the outputs (oy, ox) with oy % s == ry and ox % s == rx are a stride-1
  convolution of the input with the taps of the kernel that land on that phase, flipped. That
  is s*s forward convolutions (one for stride 1) doing exactly the multiplications needed: no
  zero-upsampled input, no col2im matrix. Workspace: the forward's, plus one phase's result
  when s > 1 (written into the strided output by NumPy).
* The weight gradient is i2r_grad_weight (C): the im2row matrix lowered a block of pixels at a
  time and multiplied with grad_out by the forward's microkernels, each weight's sum taken in
  an order that does not depend on the thread count. Without the extension, NumPy does it one
  image's im2row matrix at a time.
"""
import dataclasses
from types import SimpleNamespace

import numpy as np

from . import _backend
from ._args import (check_array, check_bias, check_conv_args, check_layout, check_method,
                    check_num_threads, check_out, check_same_dtype, make_spec, parse_padding,
                    parse_pair, _int)
from ._api import Conv2d, conv2d, empty_aligned, spec_geometry
from ._numpy_conv import lower_im2row

NO_WINOGRAD = ("the transposed convolution runs as stride-1 convolutions of the kernel's "
               "phases, which are not all 3x3; use an exact method")
NEEDS = ("input", "weight", "bias")


# --- the phase split -------------------------------------------------------------------------

def _phase_taps(r, pad, s, d, k):
    """Taps of one dimension landing on output phase r (oy % s == r), as (taps in the order the
    phase convolution reads them, e0, spacing): output j of the phase reads input rows
    j + e0 + i*spacing with tap taps[i]."""
    taps = [t for t in range(k) if (r + pad - t * d) % s == 0]
    if not taps:
        return (), 0, 1
    taps.reverse()                      # ascending input offset
    e0 = (r + pad - taps[0] * d) // s
    spacing = d // np.gcd(s, d)
    return tuple(taps), e0, spacing


def _phase_window(size, count, e0, spacing, ntaps):
    """(first, end, pad_before, pad_after) of the input rows one phase dimension reads, the
    rows it reads cropped to [first, end) and the rest given as padding; None if none of the
    rows it reads exists."""
    lo, hi = e0, count - 1 + e0 + (ntaps - 1) * spacing     # inclusive
    first, end = max(lo, 0), min(hi, size - 1) + 1
    if end <= first:
        return None
    return first, end, first - lo, hi + 1 - end


class _TransposedPlan:
    """The phase convolutions of one transposed convolution: weight in the NCHW form
    (C_in, C_out/groups, KH, KW), kept in the forward OIHW (or HWIO) form per phase, with a
    Conv2d plan per phase and padding (bounded cache)."""

    def __init__(self, weight, stride, dilation, groups, layout, method, plan_weights):
        cin, coutg, kh, kw = weight.shape
        self.stride, self.dilation, self.groups, self.layout = stride, dilation, groups, layout
        self.method, self.plan_weights = method, plan_weights
        self.cin, self.cout, self.kernel = cin, coutg * groups, (kh, kw)
        self.dtype = weight.dtype
        # forward weights: (C_out, C_in/groups, KH, KW)
        self.forward = (weight.reshape(groups, cin // groups, coutg, kh, kw)
                        .transpose(0, 2, 1, 3, 4).reshape(self.cout, cin // groups, kh, kw))
        self.w_nchw = weight
        self._phase_weights = {}
        self._plans = {}
        self._hwio = None

    def _weights(self, ty, tx):
        key = (ty, tx)
        w = self._phase_weights.get(key)
        if w is None:
            w = self.forward[:, :, list(ty)][:, :, :, list(tx)]
            w = w if self.layout == "NCHW" else w.transpose(2, 3, 1, 0)
            self._phase_weights[key] = w = np.ascontiguousarray(w)
        return w

    def run(self, x4, bias, pad_begin, out_hw, out4, nthreads):
        """out4 (N, C_out, OH, OW) or NHWC = the transposed convolution of x4, its output pixel
        (oy, ox) at full coordinate (oy + pad_begin[0], ox + pad_begin[1])."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        nchw = self.layout == "NCHW"
        hin, win = x4.shape[2:] if nchw else x4.shape[1:3]
        if self._run_scatter(x4, bias, pad_begin, out_hw, out4, nthreads):
            return
        for ry in range(min(sh, out_hw[0])):
            ty, ey, spy = _phase_taps(ry, pad_begin[0], sh, dh, self.kernel[0])
            cy = -(-(out_hw[0] - ry) // sh)
            for rx in range(min(sw, out_hw[1])):
                tx, ex, spx = _phase_taps(rx, pad_begin[1], sw, dw, self.kernel[1])
                cx = -(-(out_hw[1] - rx) // sw)
                dst = (out4[:, :, ry::sh, rx::sw] if nchw else out4[:, ry::sh, rx::sw, :])
                wy = _phase_window(hin, cy, ey, spy, len(ty)) if ty else None
                wx = _phase_window(win, cx, ex, spx, len(tx)) if tx else None
                if wy is None or wx is None:   # no tap reads an input here: bias only
                    dst[...] = 0
                    if bias is not None:
                        dst += bias[:, None, None] if nchw else bias
                    continue
                xs = (x4[:, :, wy[0]:wy[1], wx[0]:wx[1]] if nchw
                      else x4[:, wy[0]:wy[1], wx[0]:wx[1], :])
                padding = ((wy[2], wy[3]), (wx[2], wx[3]))
                contiguous_dst = sh == 1 and sw == 1
                target = dst if contiguous_dst else None
                res = self._conv(ty, tx, xs, bias, padding, (spy, spx), target, nthreads)
                if not contiguous_dst:
                    dst[...] = res

    def _run_scatter(self, x4, bias, pad_begin, out_hw, out4, nthreads):
        """The scatter form (C, i2r_transpose_scatter) where the C planner prefers it (few
        output channels per group): True if it ran."""
        native = _backend.native
        if native is None or self.method != "auto":
            return False
        nchw = self.layout == "NCHW"
        n = x4.shape[0]
        hin, win = x4.shape[2:] if nchw else x4.shape[1:3]
        (sh, sw), (dh, dw), (kh, kw) = self.stride, self.dilation, self.kernel
        # the forward convolution whose input gradient this is: input out_hw x C_out, output
        # (hin, win) x C_in; its bottom/right padding may be negative (output_padding)
        pb = (hin - 1) * sh + dh * (kh - 1) + 1 - out_hw[0] - pad_begin[0]
        pr = (win - 1) * sw + dw * (kw - 1) + 1 - out_hw[1] - pad_begin[1]
        geometry = (n, self.cout, out_hw[0], out_hw[1], self.cin, kh, kw, self.groups, sh, sw,
                    dh, dw, pad_begin[0], pb, pad_begin[1], pr, hin, win, True, 0)
        f64 = self.dtype == np.float64
        asked = geometry[:18] + (not nchw, 0)   # the rule depends on the caller's layout
        if not native.transpose_scatter_preferred(asked, _backend.isa(), f64):
            return False
        if self._hwio is None:
            self._hwio = np.ascontiguousarray(self.w_nchw.transpose(2, 3, 1, 0))
        dy = np.ascontiguousarray(x4.transpose(0, 2, 3, 1) if nchw else x4)
        dx = out4 if not nchw and out4.flags.c_contiguous else empty_aligned(
            (n,) + tuple(out_hw) + (self.cout,), self.dtype)
        native.transpose_scatter(dy, self._hwio, dx, geometry,
                                 nthreads or _backend.cpu_count(), _backend.isa())
        if bias is not None:
            dx += bias
        if dx is not out4:
            out4[...] = dx.transpose(0, 3, 1, 2) if nchw else dx
        return True

    def _conv(self, ty, tx, xs, bias, padding, dilation, out, nthreads):
        w = self._weights(ty, tx)
        if not self.plan_weights:
            return conv2d(xs, w, bias, 1, padding, dilation, self.groups, layout=self.layout,
                          method=self.method, out=out, num_threads=nthreads)
        key = (ty, tx, padding, dilation)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 64:
                self._plans.clear()
            plan = Conv2d(w, bias, 1, padding, dilation, self.groups, layout=self.layout,
                          method=self.method)
            self._plans[key] = plan
        return plan(np.ascontiguousarray(xs), out=out, num_threads=nthreads)


# --- conv_transpose2d --------------------------------------------------------------------------

def _check_transpose_args(x, weight, bias, stride, padding, output_padding, groups, dilation,
                          layout, op):
    """(stride, dilation, (top, bottom, left, right) padding, output_padding, groups, weight
    in the NCHW form (C_in, C_out/groups, KH, KW)) after every check."""
    check_layout(layout, op)
    check_array(x, "x", op, (3, 4))
    check_array(weight, "weight", op, (4,))
    check_same_dtype(x, weight.dtype, op)
    groups = _int(groups, "groups", op)
    if groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups}")
    if layout == "NCHW":
        cin, coutg, kh, kw = weight.shape
        c = x.shape[-3]
        wdesc = "(C_in, C_out/groups, KH, KW)"
        w_nchw = weight
    else:
        kh, kw, coutg, cin = weight.shape
        c = x.shape[-1]
        wdesc = "(KH, KW, C_out/groups, C_in)"
        w_nchw = weight.transpose(3, 2, 0, 1)
    if cin != c:
        raise ValueError(f"{op}: expected weight of shape {wdesc} with C_in = {c} (the "
                         f"channels of x with shape {x.shape}), got weight of shape "
                         f"{weight.shape}")
    if cin % groups:
        raise ValueError(f"{op}: groups={groups} must divide the {cin} input channels")
    if min(kh, kw, coutg) < 1:
        raise ValueError(f"{op}: weight must have a kernel of at least 1x1 and at least one "
                         f"output channel, got weight of shape {weight.shape}")
    stride = parse_pair(stride, "stride", op)
    dilation = parse_pair(dilation, "dilation", op)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int, (ph, pw) or ((top, bottom), (left, "
                         f"right)), got the string {padding!r}")
    pads = parse_padding(padding, (0, 0), (1, 1), (1, 1), (1, 1), op)
    output_padding = parse_pair(output_padding, "output_padding", op, minimum=0)
    for axis, op_, s, d in zip(("height", "width"), output_padding, stride, dilation):
        if op_ >= max(s, d):
            raise ValueError(f"{op}: output_padding must be smaller than the stride or the "
                             f"dilation in the {axis}, got output_padding={op_} with "
                             f"stride={s} and dilation={d}")
    check_bias(bias, coutg * groups, x.dtype, op)
    return stride, dilation, pads, output_padding, groups, w_nchw


def _transpose_out_hw(in_hw, kernel, stride, dilation, pads, output_padding, op):
    out = []
    for i, axis in enumerate(("height", "width")):
        size = ((in_hw[i] - 1) * stride[i] - pads[2 * i] - pads[2 * i + 1]
                + dilation[i] * (kernel[i] - 1) + output_padding[i] + 1)
        if size < 1:
            raise ValueError(f"{op}: the output {axis} would be {size} (input {in_hw[i]}, "
                             f"kernel {kernel[i]}, stride {stride[i]}, padding "
                             f"{pads[2 * i]}+{pads[2 * i + 1]}, dilation {dilation[i]}, "
                             f"output_padding {output_padding[i]}); it must be positive")
        out.append(size)
    return tuple(out)


def _out_shape(n, c, hw, layout, batched):
    shape = (n, c) + hw if layout == "NCHW" else (n,) + hw + (c,)
    return shape if batched else shape[1:]


def _check_result_buffer(out, shape, dtype, inputs, op):
    """A user's out= buffer, by conv2d's rules (check_out reads only these two fields)."""
    check_out(out, SimpleNamespace(out_shape=shape, dtype=np.dtype(dtype)), inputs, op)


class ConvTranspose2d:
    """A transposed-convolution plan (torch.nn.ConvTranspose2d's computation): the weights are
    checked and kept once, the phase convolutions' plans built on first use.

    Parameters are those of :func:`conv_transpose2d`, without the input. The plan keeps its own
    copy of the weights.
    """

    def __init__(self, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                 dilation=1, *, layout="NCHW", method="auto"):
        op = "ConvTranspose2d"
        check_method(method, op, winograd=NO_WINOGRAD)
        check_array(weight, "weight", op, (4,))
        c = weight.shape[0] if layout == "NCHW" else weight.shape[-1]
        probe = np.empty((1, c, 1, 1) if layout == "NCHW" else (1, 1, 1, c), weight.dtype)
        (self.stride, self.dilation, self.padding, self.output_padding, self.groups,
         w_nchw) = _check_transpose_args(probe, weight, bias, stride, padding, output_padding,
                                         groups, dilation, layout, op)
        self.layout, self.method, self.dtype = layout, method, weight.dtype
        self.weight = np.array(weight, copy=True)
        self.weight.flags.writeable = False
        self.bias = None if bias is None else np.array(bias, copy=True)
        w_nchw = self.weight if layout == "NCHW" else self.weight.transpose(3, 2, 0, 1)
        self.in_channels, self.out_channels = w_nchw.shape[0], w_nchw.shape[1] * self.groups
        self.kernel_size = tuple(w_nchw.shape[2:])
        self._plan = _TransposedPlan(w_nchw, self.stride, self.dilation, self.groups, layout,
                                     method, plan_weights=True)

    def __call__(self, x, out=None, num_threads=None):
        return _run_transpose(self._plan, x, self.bias, self.padding, self.output_padding,
                              out, num_threads, "ConvTranspose2d", ())

    def __repr__(self):
        return (f"ConvTranspose2d(in_channels={self.in_channels}, out_channels="
                f"{self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, "
                f"groups={self.groups}, dilation={self.dilation}, layout={self.layout!r}, "
                f"method={self.method!r}, dtype={self.dtype})")


def _run_transpose(plan, x, bias, pads, output_padding, out, num_threads, op, caller_inputs):
    check_array(x, "x", op, (3, 4))
    check_same_dtype(x, plan.dtype, op)
    c = x.shape[-3] if plan.layout == "NCHW" else x.shape[-1]
    if c != plan.cin:
        raise ValueError(f"{op}: expected x with {plan.cin} channels, got shape {x.shape}")
    nthreads = check_num_threads(num_threads, op)
    batched = x.ndim == 4
    x4 = x if batched else x[None]
    in_hw = x4.shape[2:] if plan.layout == "NCHW" else x4.shape[1:3]
    out_hw = _transpose_out_hw(in_hw, plan.kernel, plan.stride, plan.dilation, pads,
                               output_padding, op)
    shape = _out_shape(x4.shape[0], plan.cout, out_hw, plan.layout, batched)
    if out is None:
        out = empty_aligned(shape, x.dtype)
    else:
        _check_result_buffer(out, shape, x.dtype, (("x", x),) + tuple(caller_inputs), op)
    if out.size == 0:
        return out
    out4 = out if batched else out[None]
    if x4.size == 0:      # no input channels or pixels: bias only
        out4[...] = 0
        if bias is not None:
            out4 += bias[:, None, None] if plan.layout == "NCHW" else bias
        return out
    plan.run(x4, bias, (pads[0], pads[2]), out_hw, out4, nthreads)
    return out


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, layout="NCHW", method="auto", out=None, num_threads=None):
    """Transposed 2-D convolution, as torch.nn.functional.conv_transpose2d (the gradient of
    conv2d with respect to its input).

    Parameters
    ----------
    x : ndarray, float32 or float64
        (N, C_in, H, W) or (C_in, H, W) for ``layout="NCHW"``; (N, H, W, C_in) or (H, W, C_in)
        for ``"NHWC"``.
    weight : ndarray, same dtype
        (C_in, C_out/groups, KH, KW) for NCHW (PyTorch's order); (KH, KW, C_out/groups, C_in)
        for NHWC (TensorFlow's conv2d_transpose filter).
    bias : ndarray of shape (C_out,), optional
    stride, dilation : int or (int, int), default 1
    padding : int, (ph, pw) or ((top, bottom), (left, right)), default 0
        Removed from the full output, as in PyTorch.
    output_padding : int or (int, int), default 0
        Extra rows/columns at the bottom/right; smaller than the stride or the dilation.
    groups : int, default 1
    method : the forward method the phase convolutions run with (see conv2d).
    out, num_threads : as for conv2d.

    Returns
    -------
    ndarray
        (N, C_out, OH, OW) for NCHW or (N, OH, OW, C_out) for NHWC, with
        OH = (H - 1)*stride - pad_top - pad_bottom + dilation*(KH - 1) + output_padding + 1.
    """
    op = "conv_transpose2d"
    check_method(method, op, winograd=NO_WINOGRAD)
    stride, dilation, pads, output_padding, groups, w_nchw = _check_transpose_args(
        x, weight, bias, stride, padding, output_padding, groups, dilation, layout, op)
    plan = _TransposedPlan(w_nchw, stride, dilation, groups, layout, method,
                           plan_weights=False)
    return _run_transpose(plan, x, bias, pads, output_padding, out, num_threads, op,
                          (("weight", weight), ("bias", bias)))


# --- conv2d_backward ---------------------------------------------------------------------------

def _check_needs(needs, op):
    if isinstance(needs, str):
        needs = (needs,)
    try:
        wanted = tuple(needs)
    except TypeError:
        raise TypeError(f"{op}: needs must be a tuple of names from {NEEDS}, got "
                        f"{type(needs).__name__} {needs!r}") from None
    for name in wanted:
        if name not in NEEDS:
            raise ValueError(f"{op}: needs may name only {', '.join(map(repr, NEEDS))}, got "
                             f"{name!r}")
    return set(wanted)


def _check_grad_out(grad_out, spec, op):
    check_array(grad_out, "grad_out", op, (3, 4))
    check_same_dtype(grad_out, spec.dtype, op)
    if grad_out.shape != spec.out_shape:
        raise ValueError(f"{op}: expected grad_out of the forward's output shape "
                         f"{spec.out_shape}, got {grad_out.shape}")


def grad_weight(x4, g4, spec, nthreads):
    """The weight gradient in the layout's weight order, from batched x and grad_out."""
    kshape = ((spec.oc, spec.cg, spec.kh, spec.kw) if spec.layout == "NCHW"
              else (spec.kh, spec.kw, spec.cg, spec.oc))
    dw = np.empty(kshape, spec.dtype)
    if spec.n * spec.oh * spec.ow == 0 or spec.c * spec.h * spec.w == 0:
        dw[...] = 0
        return dw
    native = _backend.native
    if native is None:
        return _grad_weight_numpy(x4, g4, spec, dw)
    native.grad_weight(np.ascontiguousarray(x4), np.ascontiguousarray(g4), dw,
                       spec_geometry(spec), nthreads or _backend.cpu_count(), _backend.isa())
    return dw


def _grad_weight_numpy(x4, g4, spec, dw):
    """NumPy: per image and group, im2row(x)^T @ grad_out (one image's im2row matrix)."""
    nchw = spec.layout == "NCHW"
    g, cg, ocg = spec.groups, spec.cg, spec.ocg
    acc = np.zeros((g, spec.kh * spec.kw * cg, ocg), spec.dtype)
    gspec = dataclasses.replace(spec, n=1, c=cg, oc=ocg, groups=1)
    for n in range(spec.n):
        for j in range(g):
            xs = x4[n:n + 1, j * cg:(j + 1) * cg] if nchw else x4[n:n + 1, ..., j * cg:(j + 1) * cg]
            rows = lower_im2row(xs, gspec)[0]                          # (P, K)
            gy = (g4[n, j * ocg:(j + 1) * ocg].reshape(ocg, -1).T if nchw
                  else g4[n, ..., j * ocg:(j + 1) * ocg].reshape(-1, ocg))
            acc[j] += rows.T @ gy
    if nchw:   # rows in (c, kh, kw) order -> (OC, Cg, KH, KW)
        dw[...] = acc.transpose(0, 2, 1).reshape(spec.oc, cg, spec.kh, spec.kw)
    else:      # rows in (kh, kw, c) order -> (KH, KW, Cg, OC)
        dw[...] = acc.reshape(g, spec.kh, spec.kw, cg, ocg).transpose(1, 2, 3, 0, 4).reshape(
            spec.kh, spec.kw, cg, spec.oc)
    return dw


def _backward(plan_of_input, spec, x, grad_out, needs, nthreads):
    x4 = x if spec.batched else x[None]
    g4 = grad_out if spec.batched else grad_out[None]
    grad_input = grad_w = grad_b = None
    if "input" in needs:
        grad_input = empty_aligned(x.shape, spec.dtype)
        gi4 = grad_input if spec.batched else grad_input[None]
        if spec.oh * spec.ow and gi4.size:
            plan_of_input().run(g4, None, (spec.padding[0], spec.padding[2]),
                                (spec.h, spec.w), gi4, nthreads)
        else:
            gi4[...] = 0
    if "weight" in needs:
        grad_w = grad_weight(x4, g4, spec, nthreads)
    if "bias" in needs:
        axes = (0, 2, 3) if spec.layout == "NCHW" else (0, 1, 2)
        grad_b = g4.sum(axis=axes, dtype=spec.dtype)
    return grad_input, grad_w, grad_b


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    layout="NCHW", needs=NEEDS, num_threads=None):
    """Gradients of ``conv2d(x, weight, bias, stride, padding, dilation, groups)``.

    grad_out has the forward's output shape. Returns ``(grad_input, grad_weight, grad_bias)``
    in the shapes of x, weight and (OC,); what ``needs`` leaves out is None. The input gradient
    is a transposed convolution (phase-split, on the forward kernels); the weight gradient sums
    every weight over the batch's pixels in an order that does not depend on ``num_threads``.
    """
    op = "conv2d_backward"
    needs = _check_needs(needs, op)
    spec = check_conv_args(x, weight, None, stride, padding, dilation, groups, layout, op)
    _check_grad_out(grad_out, spec, op)
    nthreads = check_num_threads(num_threads, op)
    w_nchw = weight if layout == "NCHW" else weight.transpose(3, 2, 0, 1)
    return _backward(lambda: _TransposedPlan(w_nchw, spec.stride, spec.dilation, spec.groups,
                                             layout, "auto", plan_weights=False),
                     spec, x, grad_out, needs, nthreads)


def conv2d_plan_backward(self, grad_out, x, needs=NEEDS, num_threads=None):
    """Gradients of this plan's convolution at x (see im2row.conv2d_backward): returns
    (grad_input, grad_weight, grad_bias). The input gradient's phase plans are built on the
    first call and kept."""
    op = "Conv2d.backward"
    needs = _check_needs(needs, op)
    check_array(x, "x", op, (3, 4))
    check_same_dtype(x, self.dtype, op)
    spec = self._spec(x.shape, op)
    _check_grad_out(grad_out, spec, op)
    nthreads = check_num_threads(num_threads, op)
    if self.activation is not None:
        raise ValueError(f"{op}: the plan fuses activation={self.activation!r}; its backward "
                         f"needs the pre-activation output: use a plan without activation")

    def plan_of_input():
        if getattr(self, "_input_grad_plan", None) is None:
            w_nchw = self.weight if self.layout == "NCHW" else self.weight.transpose(3, 2, 0, 1)
            self._input_grad_plan = _TransposedPlan(w_nchw, spec.stride, spec.dilation,
                                                    spec.groups, self.layout, "auto",
                                                    plan_weights=True)
        return self._input_grad_plan
    return _backward(plan_of_input, spec, x, grad_out, needs, nthreads)

