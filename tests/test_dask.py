"""im2row.dask.conv2d against im2row.conv2d on the whole array: bit for bit (np.array_equal)
over chunkings (chunks smaller than the kernel, ragged last chunks, one chunk), strides,
dilations, paddings, groups, layouts and dtypes; with the threaded scheduler and with a real
dask.distributed LocalCluster of 2 worker processes on loopback."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import im2row
from im2row import _backend

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
idask = pytest.importorskip("im2row.dask")

needs_compiled = pytest.mark.skipif(_backend.native is None,
                                    reason="compiled extension not available")

# (name, n, c, h, w, oc, kernel, conv kwargs)
GEOMS = [
    ("3x3-same", 2, 6, 23, 29, 10, (3, 3), dict(padding="same")),
    ("3x3-s2-p1", 2, 5, 24, 27, 9, (3, 3), dict(stride=2, padding=1)),
    ("5x5-dil2-same", 1, 4, 26, 25, 7, (5, 5), dict(dilation=2, padding="same")),
    ("2x3-s3-asym", 2, 6, 22, 31, 8, (2, 3), dict(stride=(3, 2), padding=((2, 0), (0, 3)))),
    ("3x2-s2-dil-same", 1, 4, 21, 30, 5, (3, 2), dict(stride=2, dilation=(1, 3),
                                                      padding="same")),
    ("1x1-pad", 2, 6, 17, 19, 10, (1, 1), dict(padding=1)),
    ("1x1-s2", 1, 8, 20, 21, 4, (1, 1), dict(stride=2)),
    ("groups", 2, 8, 20, 20, 12, (3, 3), dict(groups=2, padding=(1, 2))),
    ("depthwise", 2, 6, 25, 21, 6, (3, 3), dict(groups=6, padding="same")),
    ("depthwise-s2", 1, 5, 22, 24, 10, (3, 3), dict(groups=5, stride=2, padding=2)),
    ("valid-big-pad", 1, 3, 9, 12, 4, (3, 3), dict(padding=5, stride=2)),
    ("tall-i2r", 1, 4, 64, 12, 6, (3, 3), dict(padding=1)),     # auto runs "i2r" here
    ("7x1-s2", 1, 3, 40, 9, 5, (7, 1), dict(stride=(2, 1), padding=(3, 0))),
]
# spatial chunks (height, width): smaller than the kernel, ragged, one chunk
CHUNKINGS = [(2, 3), (5, 7), (7, 11), (-1, -1)]


def _case(geom, layout, dtype, seed=0):
    _, n, c, h, w, oc, (kh, kw), kw_args = geom
    rng = np.random.default_rng(seed)
    groups = kw_args.get("groups", 1)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((oc, c // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wt = np.ascontiguousarray(wt.transpose(2, 3, 1, 0))
    return x, wt, b, kw_args


def _chunks(layout, x, nchunk, hc, wc):
    if layout == "NCHW":
        return (nchunk, -1, hc, wc)
    return (nchunk, hc, wc, -1)


def _check(x, wt, b, kw_args, layout, chunks, method="auto", scheduler="threads", **extra):
    ref = im2row.conv2d(x, wt, b, layout=layout, method=method, **kw_args)
    y = idask.conv2d(da.from_array(x, chunks=chunks), wt, b, layout=layout, method=method,
                     **kw_args, **extra)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    got = y.compute(scheduler=scheduler) if scheduler else y.compute()
    assert got.shape == ref.shape
    if method in ("numpy", "im2col") or (method == "auto" and _backend.native is None):
        np.testing.assert_allclose(got, ref, rtol=1e-4 if x.dtype == np.float32 else 1e-10,
                                   atol=1e-4 if x.dtype == np.float32 else 1e-10)
    else:
        assert np.array_equal(got, ref), (
            f"max difference {np.abs(got - ref).max()} for chunks {chunks}, {kw_args}")
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("geom", GEOMS, ids=[g[0] for g in GEOMS])
def test_bit_identical_over_chunkings(geom, layout, dtype):
    x, wt, b, kw_args = _case(geom, layout, dtype)
    for hc, wc in CHUNKINGS:
        _check(x, wt, b, kw_args, layout, _chunks(layout, x, 1, hc, wc))


@needs_compiled
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("method", ["i2r", "im2row", "blocked"])
@pytest.mark.parametrize("geom", [GEOMS[i] for i in (0, 1, 3, 4, 5, 8, 10)],
                         ids=[GEOMS[i][0] for i in (0, 1, 3, 4, 5, 8, 10)])
def test_bit_identical_every_compiled_method(geom, method, layout):
    x, wt, b, kw_args = _case(geom, layout, np.float32, seed=1)
    for (hc, wc), nchunk in itertools.product([(3, 4), (6, 9)], [1, 2]):
        _check(x, wt, b, kw_args, layout, _chunks(layout, x, nchunk, hc, wc), method=method)


@needs_compiled
def test_bit_identical_threads_and_no_bias(debug_strip):
    """Kernel threads per task, no bias, and NaN-filled scratch (IM2ROW_DEBUG_STRIP)."""
    x, wt, _, kw_args = _case(GEOMS[0], "NHWC", np.float32)
    for threads in (1, 2):
        _check(x, wt, None, kw_args, "NHWC", (1, 4, 5, -1), num_threads=threads)


@pytest.mark.parametrize("method", ["numpy", "im2col"])
def test_numpy_methods_agree_to_rounding(method):
    x, wt, b, kw_args = _case(GEOMS[1], "NCHW", np.float64)
    _check(x, wt, b, kw_args, "NCHW", (1, -1, 5, 6), method=method)


@needs_compiled
def test_the_check_can_fail(monkeypatch):
    """Without the global column origin the strip's rotations differ chunk by chunk and the
    results are no longer bit-identical: the bit-identity test above is not vacuous."""
    x, wt, b, kw_args = _case(GEOMS[11], "NHWC", np.float32)
    chunks = (1, -1, 5, -1)
    ref = im2row.conv2d(x, wt, b, layout="NHWC", method="i2r", **kw_args)
    real = idask.spec_geometry
    monkeypatch.setattr(idask, "spec_geometry", lambda spec, col_origin=0: real(spec))
    y = idask.conv2d(da.from_array(x, chunks=chunks), wt, b, layout="NHWC", method="i2r",
                     **kw_args).compute(scheduler="threads")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(y, ref)


def test_unbatched_and_channel_chunks():
    x, wt, b, kw_args = _case(GEOMS[0], "NCHW", np.float32)
    ref = im2row.conv2d(x[1], wt, b, **kw_args)
    xd = da.from_array(x[1], chunks=(2, 5, 8))      # channels split: rechunked whole
    got = idask.conv2d(xd, wt, b, **kw_args)
    assert got.shape == ref.shape
    assert np.array_equal(got.compute(scheduler="threads"), ref)


def test_output_chunks_follow_the_input():
    x = da.zeros((2, 3, 64, 48), dtype=np.float32, chunks=(1, 3, 16, 16))
    w = np.ones((4, 3, 3, 3), np.float32)
    assert idask.conv2d(x, w, padding="same").chunks == ((1, 1), (4,), (16,) * 4, (16,) * 3)
    assert idask.conv2d(x, w, padding="same", stride=2).chunks[2:] == ((8,) * 4, (8,) * 3)
    # chunks smaller than the stride: empty output chunks are dropped
    x = da.zeros((1, 3, 12, 12), dtype=np.float32, chunks=(1, 3, 1, 12))
    y = idask.conv2d(x, np.ones((2, 3, 1, 1), np.float32), stride=3)
    assert y.chunks[2] == (1, 1, 1, 1)


def test_packed_once_per_process():
    x, wt, b, kw_args = _case(GEOMS[0], "NCHW", np.float32, seed=7)
    before = idask.pack_count
    y = idask.conv2d(da.from_array(x, chunks=(1, -1, 5, 5)), wt, b, **kw_args)
    assert y.npartitions > 20
    y.compute(scheduler="threads")
    y.compute(scheduler="threads")
    assert idask.pack_count - before == 1


def test_thread_budget_local(monkeypatch):
    cores = _backend.cpu_count()
    assert idask.task_threads(1) == cores
    assert idask.task_threads(10**6) == 1
    with dask.config.set(num_workers=1):
        assert idask.task_threads(10**6) == cores


# ---------------------------------------------------------------------------- errors

def _conv2d_error(call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return info.type, str(info.value).split(": ", 1)[1]


X = np.ones((1, 3, 8, 8), np.float32)
W = np.ones((4, 3, 3, 3), np.float32)
BAD = [
    ("weight-channels", dict(weight=np.ones((4, 2, 3, 3), np.float32))),
    ("weight-dtype", dict(weight=W.astype(np.float64))),
    ("weight-list", dict(weight=W.tolist())),
    ("bias-shape", dict(bias=np.ones(3, np.float32))),
    ("x-int", dict(x=X.astype(np.int32))),
    ("x-2d", dict(x=X[0, 0])),
    ("stride-0", dict(stride=0)),
    ("padding", dict(padding="half")),
    ("groups", dict(groups=2)),
    ("too-large", dict(dilation=5)),
    ("layout", dict(layout="CHWN")),
    ("method", dict(method="fast")),
    ("threads", dict(num_threads=0)),
]


@pytest.mark.parametrize("bad", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_errors_as_conv2d_before_any_task(bad):
    args = dict(x=X, weight=W)
    args.update(bad)
    x = args.pop("x")
    ran = []

    def source(block):
        ran.append(1)
        return block

    xd = da.from_array(x, chunks=4).map_blocks(source, meta=np.empty((0,) * x.ndim, x.dtype))
    want = _conv2d_error(lambda: im2row.conv2d(x, **args))
    got = _conv2d_error(lambda: idask.conv2d(xd, **args))
    assert got == want
    assert not ran


def test_error_non_dask_x():
    with pytest.raises(TypeError, match=r"im2row.dask.conv2d: x must be a dask.array.Array, "
                                        r"got ndarray; wrap a NumPy array"):
        idask.conv2d(X, W)


def test_import_error_without_dask():
    code = ("import sys\n"
            "sys.modules['dask'] = None\n"
            "try:\n"
            "    import im2row.dask\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    root = os.path.dirname(os.path.dirname(im2row.__file__))
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=os.path.dirname(__file__), timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "im2row[dask]"' in out.stdout, out.stdout


# ---------------------------------------------------------------------------- distributed

@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                       worker_dashboard_address="127.0.0.1:0")
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


DIST_CASES = [(GEOMS[i], layout, dtype, chunk)
              for i, layout, dtype, chunk in [(0, "NCHW", np.float32, (4, 6)),
                                              (1, "NHWC", np.float64, (5, 5)),
                                              (3, "NCHW", np.float32, (2, 3)),
                                              (4, "NHWC", np.float32, (7, -1)),
                                              (8, "NCHW", np.float64, (6, 4)),
                                              (9, "NHWC", np.float32, (3, 5)),
                                              (11, "NHWC", np.float32, (9, 5)),
                                              (5, "NCHW", np.float32, (4, 4))]]


@pytest.mark.parametrize("geom,layout,dtype,chunk", DIST_CASES,
                         ids=[f"{c[0][0]}-{c[1]}" for c in DIST_CASES])
def test_distributed_bit_identical(cluster_client, geom, layout, dtype, chunk):
    x, wt, b, kw_args = _case(geom, layout, dtype, seed=3)
    _check(x, wt, b, kw_args, layout, _chunks(layout, x, 1, *chunk), scheduler=None)


def test_distributed_packs_once_per_worker_and_threads(cluster_client):
    client = cluster_client
    x, wt, b, kw_args = _case(GEOMS[0], "NCHW", np.float32, seed=11)
    before = client.run(lambda: __import__("im2row.dask").dask.pack_count)
    y = idask.conv2d(da.from_array(x, chunks=(1, -1, 3, 3)), wt, b, **kw_args)
    assert y.npartitions >= 40
    assert np.array_equal(y.compute(), im2row.conv2d(x, wt, b, **kw_args))
    after = client.run(lambda: __import__("im2row.dask").dask.pack_count)
    assert set(after) == set(before) and len(after) == 2
    # each worker ran tasks of this graph: it packed these weights exactly once
    assert sorted(after[k] - before[k] for k in after) == [1, 1], (before, after)
    # one thread per worker, no "cores" resource: one kernel thread per task (asked inside a
    # task on each worker: client.run is not a task, get_worker() fails there)
    assert _task_threads_per_worker(client) == [1, 1]


def _task_threads_per_worker(client):
    return [client.submit(idask.task_threads, 100, workers=[addr], allow_other_workers=False,
                          pure=False).result()
            for addr in sorted(client.scheduler_info()["workers"])]


def test_distributed_thread_budget_from_cores_resource():
    """A worker that declares its cores as a resource: kernel threads = cores // nthreads."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, resources={"cores": 2},
                                  processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        assert _task_threads_per_worker(client) == [2]
        x, wt, b, kw_args = _case(GEOMS[11], "NHWC", np.float32, seed=5)
        y = idask.conv2d(da.from_array(x, chunks=(1, 20, -1, -1)), wt, b, layout="NHWC",
                         **kw_args)
        got = client.compute(y).result()
        assert np.array_equal(got, im2row.conv2d(x, wt, b, layout="NHWC", **kw_args))
