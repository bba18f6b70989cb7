"""conv2d against torch.nn.functional.conv2d (skipped when torch is not installed)."""
import numpy as np
import pytest

import im2row
from im2row import _backend
from reference import to_nhwc, tolerance

torch = pytest.importorskip("torch")
F = torch.nn.functional

METHODS = ("numpy", "im2col") + (("i2r", "im2row", "blocked", "auto") if _backend.native else ())

# (id, x shape NCHW, weight shape OIHW, kwargs for both libraries)
CONFIGS = [
    ("basic", (2, 3, 10, 9), (8, 3, 3, 3), dict(padding=1)),
    ("stride2", (2, 5, 11, 12), (16, 5, 3, 3), dict(stride=2, padding=1)),
    ("stride2x3-k3x5", (1, 4, 12, 17), (7, 4, 3, 5), dict(stride=(2, 3), padding=(1, 2))),
    ("dil2", (2, 3, 13, 11), (6, 3, 3, 3), dict(dilation=2, padding=2)),
    ("dil1x3-s2x1", (1, 6, 9, 16), (5, 6, 3, 3), dict(dilation=(1, 3), stride=(2, 1))),
    ("groups2", (2, 4, 9, 9), (6, 2, 3, 3), dict(groups=2, padding=1)),
    ("depthwise-s2", (1, 8, 12, 11), (8, 1, 3, 3), dict(groups=8, stride=2, padding=1)),
    ("depthwise-mult2", (2, 4, 7, 8), (8, 1, 5, 5), dict(groups=4, padding=2)),
    ("1x1-c17-oc33", (2, 17, 6, 5), (33, 17, 1, 1), dict()),
    ("asym-k2x4", (1, 3, 8, 9), (5, 3, 2, 4), dict(padding=((1, 2), (0, 3)))),
    ("asym-s2-d2", (2, 3, 11, 10), (4, 3, 3, 3), dict(padding=((0, 3), (2, 1)), stride=2,
                                                      dilation=2)),
    ("same-k3-d2", (1, 5, 9, 10), (6, 5, 3, 3), dict(padding="same", dilation=2)),
    ("same-k4-even", (2, 3, 8, 7), (5, 3, 4, 4), dict(padding="same")),
    ("same-k2x5", (1, 4, 7, 9), (9, 4, 2, 5), dict(padding="same")),
    ("valid-k5-s3", (1, 2, 16, 14), (3, 2, 5, 5), dict(padding="valid", stride=3)),
    ("unbatched", (3, 9, 8), (4, 3, 3, 3), dict(padding=1)),
    ("deep-c64", (1, 64, 7, 7), (40, 64, 3, 3), dict(padding=1)),
]


def torch_conv(x, w, b, kw):
    kw = dict(kw)
    pad = kw.pop("padding", 0)
    xt = torch.from_numpy(x)
    if isinstance(pad, tuple) and isinstance(pad[0], tuple):   # asymmetric: pad ourselves
        (t, bo), (le, r) = pad
        xt = F.pad(xt, (le, r, t, bo))
        pad = 0
    return F.conv2d(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                    padding=pad, **kw).numpy()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("xs,ws,kw", [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_matches_torch(xs, ws, kw, method, layout, dtype):
    rng = np.random.default_rng(len(xs) * 1000 + sum(ws))
    x = rng.uniform(-1, 1, xs).astype(dtype)
    w = rng.uniform(-1, 1, ws).astype(dtype)
    b = rng.uniform(-1, 1, ws[0]).astype(dtype)
    want = torch_conv(x, w, b, kw)
    if layout == "NCHW":
        got = im2row.conv2d(x, w, b, method=method, **kw)
    else:
        xn, wn = to_nhwc(x, w)
        got = np.moveaxis(im2row.conv2d(xn, wn, b, layout="NHWC", method=method, **kw), -1, -3)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * tolerance(dtype, ws[1] * ws[2] * ws[3]))
