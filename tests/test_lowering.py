"""im2row.im2row / im2row.im2col: shapes, documented column orders, and the convolution as a
plain matrix product of the lowered matrix with the reshaped weights."""
import numpy as np
import pytest

import im2row
from reference import conv2d_reference, pad_amounts, pair, to_nhwc, tolerance

GEOMETRIES = [
    dict(k=3),
    dict(k=3, padding=1),
    dict(k=(2, 3), stride=2, padding=((1, 0), (0, 2))),
    dict(k=(3, 1), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
    dict(k=2, padding="same", stride=2),
    dict(k=3, padding="same", dilation=2),
    dict(k=1),
    dict(k=(1, 3), padding="valid", dilation=(1, 2)),
    dict(k=(5, 6)),            # kernel equal to the input
]
GEOM_IDS = ["k3", "k3-p1", "k2x3-s2-asym", "k3x1-s1x2-d2x1", "k2-same-s2", "k3-same-d2",
            "k1", "k1x3-valid-d1x2", "k-eq-input"]


def _args(g):
    return dict(stride=g.get("stride", 1), padding=g.get("padding", 0),
                dilation=g.get("dilation", 1))


def lowered_by_loops(x, kernel_size, stride, padding, dilation):
    """Independent lowering of an NCHW batch: (N, OH, OW, C, KH, KW) by explicit loops."""
    n, c, h, w = x.shape
    kh, kw = pair(kernel_size)
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    pt, pb, pl, pr = pad_amounts(h, w, kh, kw, (sh, sw), padding, (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    res = np.empty((n, oh, ow, c, kh, kw), x.dtype)
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    res[:, i, j, :, a, b] = xp[:, :, i * sh + a * dh, j * sw + b * dw]
    return res


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("g", GEOMETRIES, ids=GEOM_IDS)
def test_shapes_and_column_order(g, dtype):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 5, 6)).astype(dtype)
    kh, kw = pair(g["k"])
    want = lowered_by_loops(x, g["k"], **_args(g))          # (N, OH, OW, C, KH, KW)
    n, oh, ow, c = want.shape[:4]
    k = c * kh * kw
    x_nhwc = np.ascontiguousarray(np.moveaxis(x, 1, -1))

    r = im2row.im2row(x, g["k"], **_args(g))
    assert r.shape == (n, oh * ow, k) and r.dtype == dtype
    np.testing.assert_array_equal(r, want.reshape(n, oh * ow, k))             # (c, kh, kw)
    col = im2row.im2col(x, g["k"], **_args(g))
    assert col.shape == (n, k, oh * ow) and col.dtype == dtype
    np.testing.assert_array_equal(col, r.transpose(0, 2, 1))

    r_nhwc = im2row.im2row(x_nhwc, g["k"], layout="NHWC", **_args(g))
    assert r_nhwc.shape == (n, oh * ow, k)
    np.testing.assert_array_equal(
        r_nhwc, want.transpose(0, 1, 2, 4, 5, 3).reshape(n, oh * ow, k))     # (kh, kw, c)
    col_nhwc = im2row.im2col(x_nhwc, g["k"], layout="NHWC", **_args(g))
    np.testing.assert_array_equal(col_nhwc, r_nhwc.transpose(0, 2, 1))

    # unbatched: the same matrices without N
    np.testing.assert_array_equal(im2row.im2row(x[1], g["k"], **_args(g)), r[1])
    np.testing.assert_array_equal(im2row.im2col(x[1], g["k"], **_args(g)), col[1])
    np.testing.assert_array_equal(
        im2row.im2row(x_nhwc[0], g["k"], layout="NHWC", **_args(g)), r_nhwc[0])
    np.testing.assert_array_equal(
        im2row.im2col(x_nhwc[0], g["k"], layout="NHWC", **_args(g)), col_nhwc[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("g", GEOMETRIES, ids=GEOM_IDS)
def test_matrix_product_is_the_convolution(g, dtype):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 4, 5, 6)).astype(dtype)
    kh, kw = pair(g["k"])
    w = rng.uniform(-1, 1, (7, 4, kh, kw)).astype(dtype)
    ref = conv2d_reference(x, w, **_args(g))               # (N, OC, OH, OW)
    n, oc, oh, ow = ref.shape
    tol = tolerance(dtype, 4 * kh * kw)

    res = im2row.im2row(x, g["k"], **_args(g)) @ w.reshape(oc, -1).T      # (N, OH*OW, OC)
    np.testing.assert_allclose(res.transpose(0, 2, 1).reshape(ref.shape), ref, rtol=0,
                               atol=tol)
    res = w.reshape(oc, -1) @ im2row.im2col(x, g["k"], **_args(g))       # (N, OC, OH*OW)
    np.testing.assert_allclose(res.reshape(ref.shape), ref, rtol=0, atol=tol)

    x_nhwc, w_hwio = to_nhwc(x, w)
    res = im2row.im2row(x_nhwc, g["k"], layout="NHWC", **_args(g)) @ w_hwio.reshape(-1, oc)
    np.testing.assert_allclose(res.reshape(n, oh, ow, oc), ref.transpose(0, 2, 3, 1), rtol=0,
                               atol=tol)


def test_inputs_of_any_order_unchanged():
    rng = np.random.default_rng(2)
    base = rng.uniform(-1, 1, (2, 3, 8, 10))
    want = im2row.im2row(np.ascontiguousarray(base[:, :, ::2, ::-1]), 3, padding=1)
    for x in (base[:, :, ::2, ::-1], np.asfortranarray(base[:, :, ::2, ::-1])):
        saved = x.copy()
        x.flags.writeable = False
        np.testing.assert_array_equal(im2row.im2row(x, 3, padding=1), want)
        np.testing.assert_array_equal(im2row.im2col(x, 3, padding=1),
                                      want.transpose(0, 2, 1))
        np.testing.assert_array_equal(x, saved)
    r = im2row.im2row(base, 3)
    assert r.flags.writeable and not np.shares_memory(r, base)


def test_zero_batch():
    x = np.zeros((0, 3, 5, 5), np.float32)
    assert im2row.im2row(x, 3, padding=1).shape == (0, 25, 27)
    assert im2row.im2col(x, 3, padding=1).shape == (0, 27, 25)


@pytest.mark.parametrize("g", GEOMETRIES[:6], ids=GEOM_IDS[:6])
def test_im2col_equals_torch_unfold(g):
    torch = pytest.importorskip("torch")
    if isinstance(g.get("padding", 0), str) or isinstance(g.get("padding"), tuple) and \
            isinstance(g["padding"][0], tuple):
        pytest.skip("unfold takes symmetric padding only")
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 3, 6, 7))
    a = _args(g)
    want = torch.nn.functional.unfold(torch.from_numpy(x), g["k"], dilation=a["dilation"],
                                      padding=a["padding"], stride=a["stride"]).numpy()
    np.testing.assert_array_equal(im2row.im2col(x, g["k"], **a), want)


def test_zero_channels():
    """conv2d accepts C=0; the lowered matrices then have no columns (rows for im2col)."""
    x = np.zeros((2, 0, 4, 5))
    assert im2row.im2row(x, 3, padding=1).shape == (2, 20, 0)
    assert im2row.im2col(x, 3, padding=1).shape == (2, 0, 20)
    assert im2row.im2row(np.zeros((4, 5, 0)), 3, padding=1, layout="NHWC").shape == (20, 0)
