"""conv2d_backward, conv_transpose2d, ConvTranspose2d and Conv2d.backward against the float64
references of tests/reference.py (independent of the package), against the package's own
float64 conv2d (the adjoint identity), and against torch.autograd where PyTorch is installed."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import im2row
from conftest import COMPILED
from reference import (conv2d_grad_weight_reference, conv2d_reference,
                       conv_transpose2d_reference, pad_amounts, pair, to_nhwc)

try:
    import torch
except ImportError:
    torch = None

# (n, c, h, w, oc, kernel, stride, padding, dilation, groups): output channels on both sides
# of the register tiles (MR 4/6/14, NR 8/16/32), odd maps, padding forms, depthwise
BACKWARD_CASES = [
    (2, 3, 7, 9, 5, 3, 1, 1, 1, 1),
    (1, 5, 9, 8, 14, 3, 2, 1, 1, 1),
    (2, 8, 6, 7, 33, (2, 3), (1, 2), (0, 1), 1, 1),
    (1, 6, 11, 10, 15, 3, 3, 2, (2, 1), 1),
    (2, 6, 8, 9, 4, 3, 2, "same", 1, 2),
    (1, 4, 7, 7, 6, (3, 1), 1, ((2, 0), (1, 3)), 1, 2),
    (2, 8, 9, 10, 8, 3, 1, 1, 1, 8),              # depthwise
    (1, 12, 10, 9, 12, 5, 2, 2, 1, 12),           # depthwise 5x5 stride 2
    (2, 6, 7, 8, 12, 3, 2, 1, 1, 6),              # channel multiplier 2 (GEMM per group)
    (1, 40, 6, 6, 17, 1, 1, 0, 1, 1),             # pointwise, K past one panel
    (1, 3, 5, 5, 2, 5, 1, 0, 1, 1),               # kernel as large as the input
    (3, 2, 1, 1, 3, 1, 1, 0, 1, 1),               # 1x1 image
    (2, 5, 17, 19, 9, 3, 1, 1, 1, 1),             # past one block of pixels (GW_PB)
    (2, 20, 17, 18, 20, 3, 1, 1, 1, 20),          # depthwise, many rows
    (2, 12, 9, 8, 7, 3, 2, 1, 1, 1),              # input gradient by phases (12 channels)
    (1, 18, 7, 9, 6, (3, 2), (2, 3), 1, (1, 2), 2),
]
LAYOUTS = ("NCHW", "NHWC")
DTYPES = (np.float64, np.float32)


def _case_data(case, rng, dtype=np.float64):
    n, c, h, w, oc, k, s, p, d, g = case
    kh, kw = pair(k)
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((oc, c // g, kh, kw))
    y = conv2d_reference(x, weight, None, s, p, d, g)
    gy = rng.standard_normal(y.shape)
    return x.astype(dtype), weight.astype(dtype), gy.astype(dtype)


def _grad_input_reference(x, weight, gy, s, p, d, g):
    """dL/dx by the definition: the transposed convolution of gy, cut to x's shape."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    pt, pb, pl, pr = pad_amounts(h, w, kh, kw, pair(s), p, pair(d))
    full = conv_transpose2d_reference(gy, weight, None, s, 0, 0, g, d)
    padded = np.zeros((n, c, h + pt + pb, w + pl + pr))
    hh, ww = min(full.shape[2], padded.shape[2]), min(full.shape[3], padded.shape[3])
    padded[:, :, :hh, :ww] = full[:, :, :hh, :ww]
    return padded[:, :, pt:pt + h, pl:pl + w]


def _in_layout(layout, x, weight, gy):
    if layout == "NCHW":
        return x, weight, gy
    xh, wh = to_nhwc(x, weight)
    return xh, wh, np.ascontiguousarray(np.moveaxis(gy, 1, -1))


def _to_nchw(layout, gi, gw):
    if layout == "NCHW":
        return gi, gw
    return np.moveaxis(gi, -1, 1), gw.transpose(3, 2, 0, 1)


def _close(got, want, dtype, depth):
    scale = max(np.abs(want).max(), 1.0)
    tol = (1e-12 if dtype == np.float64 else 2e-5) * np.sqrt(max(depth, 1)) * 8
    err = np.abs(np.asarray(got, np.float64) - want).max() / scale
    assert err <= tol, (err, tol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", BACKWARD_CASES)
@pytest.mark.parametrize("api", ("function", "plan"))
def test_backward_matches_reference(case, layout, dtype, api, rng):
    n, c, h, w, oc, k, s, p, d, g = case
    x, weight, gy = _case_data(case, rng, dtype)
    xl, wl, gl = _in_layout(layout, x, weight, gy)
    copies = [a.copy() for a in (xl, wl, gl)]
    if api == "function":
        gi, gw, gb = im2row.conv2d_backward(gl, xl, wl, s, p, d, g, layout=layout)
    else:
        plan = im2row.Conv2d(wl, None, s, p, d, g, layout=layout)
        gi, gw, gb = plan.backward(gl, xl)
        gi2, gw2, gb2 = plan.backward(gl, xl)        # the kept phase plans give the same
        assert np.array_equal(gi, gi2) and np.array_equal(gw, gw2)
    for a, b in zip((xl, wl, gl), copies):
        assert np.array_equal(a, b), "an input was modified"
    assert gi.shape == xl.shape and gw.shape == wl.shape and gb.shape == (oc,)
    assert gi.dtype == gw.dtype == gb.dtype == dtype
    gi, gw = _to_nchw(layout, gi, gw)
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, weight, gy))
    kh, kw = w64.shape[2:]
    _close(gi, _grad_input_reference(x64, w64, gy64, s, p, d, g), dtype, oc // g * kh * kw)
    _close(gw, conv2d_grad_weight_reference(x64, gy64, (kh, kw), s, p, d, g), dtype,
           n * gy.shape[2] * gy.shape[3])
    _close(gb, gy64.sum(axis=(0, 2, 3)), dtype, n * gy.shape[2] * gy.shape[3])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", BACKWARD_CASES[:6])
def test_backward_is_the_adjoint_of_conv2d(case, layout, rng):
    """conv2d is linear in x and in w: <conv(x + dx) - conv(x), gy> = <dx, grad_input>, and the
    same for w; checked with the package's own float64 forward, independent of torch."""
    n, c, h, w, oc, k, s, p, d, g = case
    x, weight, gy = _case_data(case, rng)
    xl, wl, gl = _in_layout(layout, x, weight, gy)
    dx, dw = rng.standard_normal(xl.shape), rng.standard_normal(wl.shape)
    gi, gw, _ = im2row.conv2d_backward(gl, xl, wl, s, p, d, g, layout=layout)
    f = lambda a, b: im2row.conv2d(a, b, None, s, p, d, g, layout=layout)   # noqa: E731
    base = f(xl, wl)
    lhs_x = np.vdot(f(xl + dx, wl) - base, gl)
    lhs_w = np.vdot(f(xl, wl + dw) - base, gl)
    assert np.isclose(lhs_x, np.vdot(dx, gi), rtol=1e-9, atol=1e-9)
    assert np.isclose(lhs_w, np.vdot(dw, gw), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("needs", [("input",), ("weight",), ("bias",), ("weight", "bias"), ()])
def test_needs_selects_outputs(needs, rng):
    x, weight, gy = _case_data(BACKWARD_CASES[0], rng)
    res = im2row.conv2d_backward(gy, x, weight, 1, 1, needs=needs)
    for name, value in zip(("input", "weight", "bias"), res):
        assert (value is None) == (name not in needs)


@pytest.mark.skipif(not COMPILED, reason="compiled extension not available")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [BACKWARD_CASES[i] for i in (0, 2, 6, 9)] +
                         [(4, 64, 20, 21, 70, 3, 1, 1, 1, 1), (3, 96, 9, 9, 96, 3, 1, 1, 1, 96)])
def test_weight_gradient_bits_do_not_depend_on_threads(case, layout, rng):
    x, weight, gy = _case_data(case, rng, np.float32)
    xl, wl, gl = _in_layout(layout, x, weight, gy)
    n, c, h, w, oc, k, s, p, d, g = case
    results = [im2row.conv2d_backward(gl, xl, wl, s, p, d, g, layout=layout,
                                      needs=("weight",), num_threads=t)[1] for t in (1, 2, 3)]
    assert all(np.array_equal(results[0], r) for r in results[1:])


# (n, c_in, h, w, c_out/groups, kernel, stride, padding, output_padding, groups, dilation)
TRANSPOSE_CASES = [
    (2, 4, 5, 6, 3, 3, 1, 1, 0, 1, 1),
    (1, 6, 4, 5, 2, 2, 2, 0, 0, 1, 1),          # UNet up-convolution
    (2, 4, 7, 6, 3, 4, 2, 1, 0, 2, 1),          # GAN 4x4 s2
    (1, 3, 5, 5, 17, 3, 2, 1, 1, 1, 1),
    (1, 4, 5, 4, 2, 3, 3, 0, 2, 2, 2),
    (1, 2, 3, 3, 3, (2, 3), (2, 3), (1, 0), (1, 2), 1, (1, 2)),
    (1, 4, 6, 6, 1, 3, 2, 1, 1, 4, 1),          # depthwise
    (1, 5, 1, 1, 3, 1, 1, 0, 0, 1, 1),
    (2, 3, 4, 4, 2, 5, 3, 2, 0, 1, 3),
    (1, 3, 4, 5, 2, 2, 3, 0, 0, 1, 1),          # stride > kernel: phases with no tap
    (1, 2, 5, 4, 3, 3, 2, ((2, 0), (0, 1)), 1, 1, 1),   # asymmetric padding
    (2, 5, 5, 6, 12, 3, 2, 1, 1, 1, 1),         # C_out/groups past the scatter form's rule
    (1, 6, 4, 4, 10, 4, 2, 1, 0, 2, 1),
    (1, 4, 5, 5, 9, 3, 3, 0, 2, 1, 2),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
@pytest.mark.parametrize("api", ("function", "plan", "phases"))
def test_conv_transpose2d_matches_reference(case, layout, dtype, api, rng):
    """api "phases": method="i2r" runs the phase split everywhere (never the scatter form)."""
    n, cin, h, w, coutg, k, s, p, op, g, d = case
    kh, kw = pair(k)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cin, coutg, kh, kw)).astype(dtype)
    bias = rng.standard_normal(coutg * g).astype(dtype)
    want = conv_transpose2d_reference(x, weight, bias, s, p, op, g, d)
    xl = x if layout == "NCHW" else np.ascontiguousarray(np.moveaxis(x, 1, -1))
    wl = weight if layout == "NCHW" else np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    out_shape = want.shape if layout == "NCHW" else (want.shape[0],) + want.shape[2:] + (
        want.shape[1],)
    out = np.full(out_shape, np.nan, dtype)
    if api == "phases" and not COMPILED:
        pytest.skip("compiled extension not available")
    if api in ("function", "phases"):
        got = im2row.conv_transpose2d(xl, wl, bias, s, p, op, g, d, layout=layout, out=out,
                                      method="i2r" if api == "phases" else "auto")
    else:
        got = im2row.ConvTranspose2d(wl, bias, s, p, op, g, d, layout=layout)(xl, out=out)
    assert got is out and not np.isnan(out).any()
    got = got if layout == "NCHW" else np.moveaxis(got, -1, 1)
    _close(got, want, dtype, cin // g * kh * kw)


def test_conv_transpose2d_unbatched_and_threads(rng):
    x = rng.standard_normal((6, 5, 7)).astype(np.float32)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    one = im2row.conv_transpose2d(x, weight, stride=2, padding=1, num_threads=1)
    two = im2row.conv_transpose2d(x, weight, stride=2, padding=1, num_threads=2)
    assert one.shape == (4, 9, 13)
    assert np.array_equal(one, two)
    _close(one, conv_transpose2d_reference(x[None], weight, None, 2, 1)[0], np.float32, 54)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("case", BACKWARD_CASES[:5] + BACKWARD_CASES[6:9])
def test_backward_matches_torch_autograd(case, rng):
    n, c, h, w, oc, k, s, p, d, g = case
    x, weight, gy = _case_data(case, rng)
    kh, kw = weight.shape[2:]
    pt, pb, pl, pr = pad_amounts(h, w, kh, kw, pair(s), p, pair(d))
    xt = torch.tensor(np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))), requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    bt = torch.zeros(oc, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.conv2d(xt, wt, bt, s, 0, d, g).backward(torch.tensor(gy))
    gi, gw, gb = im2row.conv2d_backward(gy, x, weight, s, p, d, g)
    np.testing.assert_allclose(gi, xt.grad.numpy()[:, :, pt:pt + h, pl:pl + w], atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(gb, bt.grad.numpy(), atol=1e-10)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("case", [c for c in TRANSPOSE_CASES
                                  if not isinstance(c[7], tuple) or
                                  all(isinstance(v, int) for v in c[7])])
def test_conv_transpose2d_matches_torch(case, rng):
    n, cin, h, w, coutg, k, s, p, op, g, d = case
    kh, kw = pair(k)
    x = rng.standard_normal((n, cin, h, w))
    weight = rng.standard_normal((cin, coutg, kh, kw))
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(weight), None, s,
                                                p, op, g, d).numpy()
    np.testing.assert_allclose(im2row.conv_transpose2d(x, weight, None, s, p, op, g, d), want,
                               atol=1e-10)


# --- hostile input -----------------------------------------------------------------------------

def test_backward_validation_messages(rng):
    x, weight, gy = _case_data(BACKWARD_CASES[0], rng)
    with pytest.raises(ValueError, match=r"grad_out of the forward's output shape "
                                         r"\(2, 5, 7, 9\), got \(2, 5, 7, 8\)"):
        im2row.conv2d_backward(gy[..., :8], x, weight, 1, 1)
    with pytest.raises(TypeError, match="grad_out must be a numpy.ndarray"):
        im2row.conv2d_backward(gy.tolist(), x, weight, 1, 1)
    with pytest.raises(TypeError, match="same dtype"):
        im2row.conv2d_backward(gy.astype(np.float32), x, weight, 1, 1)
    with pytest.raises(ValueError, match="needs may name only"):
        im2row.conv2d_backward(gy, x, weight, 1, 1, needs=("inputs",))
    with pytest.raises(ValueError, match="expected weight of shape"):
        im2row.conv2d_backward(gy, x, weight[:, :2], 1, 1)
    plan = im2row.Conv2d(weight, padding=1, activation="relu")
    with pytest.raises(ValueError, match="pre-activation"):
        plan.backward(gy, x)


def test_conv_transpose2d_validation_messages(rng):
    x = rng.standard_normal((1, 4, 5, 5))
    weight = rng.standard_normal((4, 3, 3, 3))
    with pytest.raises(ValueError, match="output_padding must be smaller than the stride"):
        im2row.conv_transpose2d(x, weight, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"C_in = 4 .* got weight of shape \(3, 3, 3, 3\)"):
        im2row.conv_transpose2d(x, weight[:3])
    with pytest.raises(ValueError, match="got the string 'same'"):
        im2row.conv_transpose2d(x, weight, padding="same")
    with pytest.raises(ValueError, match="output height would be"):
        im2row.conv_transpose2d(x[:, :, :1], weight, padding=(2, 0))
    with pytest.raises(ValueError, match="groups=3 must divide the 4 input channels"):
        im2row.conv_transpose2d(x, weight, groups=3)
    with pytest.raises(ValueError, match=r"expected bias of shape \(OC,\) = \(3,\)"):
        im2row.conv_transpose2d(x, weight, np.zeros(4))
    with pytest.raises(ValueError, match="expected out of shape"):
        im2row.conv_transpose2d(x, weight, out=np.empty((1, 3, 6, 6)))
    buf = np.zeros(100 + 147)
    xs, overlapping = buf[:100].reshape(1, 4, 5, 5), buf[50:197].reshape(1, 3, 7, 7)
    with pytest.raises(ValueError, match="must not share memory with x"):
        im2row.conv_transpose2d(xs, weight, out=overlapping)


def test_numpy_fallback_runs_both_ops():
    """Without the extension both ops run on NumPy and agree with the references."""
    code = textwrap.dedent(f"""
        import sys, warnings
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        warnings.simplefilter("ignore")
        import numpy as np, im2row
        from reference import conv2d_grad_weight_reference, conv_transpose2d_reference
        assert not im2row.backend_info()["compiled"]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 4, 6, 7)); w = rng.standard_normal((6, 2, 3, 3))
        gy = rng.standard_normal(im2row.conv2d(x, w, stride=2, padding=1, groups=2).shape)
        gi, gw, gb = im2row.conv2d_backward(gy, x, w, 2, 1, groups=2)
        assert np.abs(gw - conv2d_grad_weight_reference(x, gy, (3, 3), 2, 1, 1, 2)).max() < 1e-9
        t = im2row.conv_transpose2d(gy, w, None, 2, 1, 1, 2)
        assert np.abs(t - conv_transpose2d_reference(gy, w, None, 2, 1, 1, 2)).max() < 1e-9
        print("ok")
    """)
    env = dict(os.environ, IM2ROW_FORCE_NUMPY="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
