"""Threads, memory and large images.

* Python threads: 8 threads call ``conv2d`` and one shared ``Conv2d`` plan at once, on inputs
  of different sizes, with the compiled methods and 1 or 2 kernel threads each; every result
  must equal the one computed before, on one thread. The kernels must release the GIL.
* Leaks: in a fresh child process (a clean RSS), RSS after 2,000 small calls and 200 plan
  creations (and calls that fail their argument checks) stays within a few MiB of RSS after the
  first 200, which come after a warm-up.
* Large images: the strip of a 1 x 16 x 4096 x 4096 float32 3x3 convolution needs a few MiB of
  workspace (``workspace_bytes``; the run itself takes seconds, so it is opt-in with
  ``IM2ROW_LARGE_TESTS=1``), and ``method="im2col"``, which would need GiBs, warns or refuses
  before allocating anything.
"""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

import im2row
from im2row import _numpy_conv
from reference import conv2d_reference, to_nhwc

COMPILED = im2row.backend_info()["compiled"]
needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled extension not available")
LARGE = os.environ.get("IM2ROW_LARGE_TESTS", "") not in ("", "0")
MiB = 1 << 20


def sanitized():
    """True under the AddressSanitizer CI step (its allocator quarantines freed memory, so
    RSS says nothing about leaks there; LeakSanitizer is off because Python itself leaks)."""
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Python threads

N_THREADS = 8
ROUNDS = 6


def _thread_inputs(layout, dtype):
    """Per thread and round a different input (sizes vary, so the shared plan sees different
    geometries at the same time)."""
    rng = np.random.default_rng(7)
    xs = []
    for t in range(N_THREADS):
        row = []
        for r in range(ROUNDS):
            n, h, w = 1 + (t + r) % 2, 9 + 3 * t + r, 17 + 5 * ((t * 3 + r) % 4)
            x = rng.uniform(-1, 1, (n, 6, h, w))
            if layout == "NHWC":
                x = np.moveaxis(x, 1, -1)
            row.append(np.ascontiguousarray(x, dtype))
        xs.append(row)
    return xs


def _run_threads(target):
    """Start N_THREADS threads at once (barrier); re-raise the first exception."""
    barrier = threading.Barrier(N_THREADS)
    errors = []

    def body(t):
        try:
            barrier.wait()
            target(t)
        except BaseException as exc:     # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
        assert not th.is_alive(), "a thread hangs"
    if errors:
        raise errors[0]


@needs_compiled
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eight_python_threads_conv2d_and_shared_plan(layout, dtype):
    rng = np.random.default_rng(3)
    w = rng.uniform(-1, 1, (10, 3, 3, 3))          # groups=2: 6 input channels
    bias = rng.uniform(-1, 1, 10).astype(dtype)
    if layout == "NHWC":
        w = w.transpose(2, 3, 1, 0)
    w = np.ascontiguousarray(w, dtype)
    kwargs = dict(stride=(1, 2), padding=1, dilation=(2, 1), groups=2, layout=layout)
    plans = {m: im2row.Conv2d(w, bias, method=m, activation="relu", **kwargs)
             for m in ("i2r", "im2row", "blocked")}
    xs = _thread_inputs(layout, dtype)
    combos = [(m, nt) for m in ("i2r", "im2row", "blocked") for nt in (1, 2)]
    # the single-threaded answers, computed first
    expected = {}
    for t in range(N_THREADS):
        for r in range(ROUNDS):
            m, nt = combos[(t + r) % len(combos)]
            x = xs[t][r]
            expected[t, r, "conv2d"] = im2row.conv2d(x, w, bias, method=m, num_threads=1,
                                                     **kwargs)
            expected[t, r, "plan"] = plans[m](x, num_threads=1)
    inputs_before = [[x.copy() for x in row] for row in xs]
    results = {}

    def work(t):
        for r in range(ROUNDS):
            m, nt = combos[(t + r) % len(combos)]
            x = xs[t][r]
            results[t, r, "conv2d"] = im2row.conv2d(x, w, bias, method=m, num_threads=nt,
                                                    **kwargs)
            results[t, r, "plan"] = plans[m](x, num_threads=nt)
            out = np.full_like(expected[t, r, "plan"], np.nan)
            results[t, r, "plan-out"] = plans[m](x, out=out, num_threads=nt)

    _run_threads(work)
    for (t, r, kind), got in results.items():
        want = expected[t, r, "plan" if kind == "plan-out" else kind]
        np.testing.assert_array_equal(got, want, err_msg=f"thread {t} round {r} {kind} "
                                      f"{combos[(t + r) % len(combos)]}")
    for row, before in zip(xs, inputs_before):
        for x, x0 in zip(row, before):
            np.testing.assert_array_equal(x, x0)
    # and the single-threaded answers are right
    x = xs[0][0]
    xn = np.moveaxis(x, -1, 1) if layout == "NHWC" else x
    wn = w.transpose(3, 2, 0, 1) if layout == "NHWC" else w
    ref = np.maximum(conv2d_reference(xn, wn, bias, (1, 2), 1, (2, 1), 2), 0)
    got = expected[0, 0, "plan"]
    got = np.moveaxis(got, -1, 1) if layout == "NHWC" else got
    np.testing.assert_allclose(got, ref, atol=1e-4 if dtype == np.float32 else 1e-10)


@needs_compiled
@pytest.mark.parametrize("method", ["i2r", "im2row", "blocked"])
def test_kernels_release_the_gil(method):
    """While one thread runs a long convolution (one kernel thread), the main thread keeps
    running Python code: its longest pause is a small part of the call. A call that held the
    GIL would stall it for about the whole call."""
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 32, 128, 128)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    plan = im2row.Conv2d(w, padding=1, method=method)
    plan(x1, num_threads=1)                                 # warm up
    t0 = time.perf_counter()
    plan(x1, num_threads=1)
    per_image = time.perf_counter() - t0
    n = max(1, min(64, int(np.ceil(0.3 / max(per_image, 1e-4)))))   # one call of ~0.3 s
    x = np.repeat(x1, n, axis=0)
    done = threading.Event()
    took = []

    def convolve():
        t = time.perf_counter()
        plan(x, num_threads=1)
        took.append(time.perf_counter() - t)
        done.set()

    th = threading.Thread(target=convolve)
    ticks = [time.perf_counter()]
    th.start()
    while not done.is_set():
        time.sleep(0.001)
        ticks.append(time.perf_counter())
    th.join()
    longest = float(np.diff(ticks).max())
    assert longest < 0.5 * took[0], (
        f"the main thread stalled {longest * 1e3:.0f} ms during a {took[0] * 1e3:.0f} ms "
        f"{method} call ({len(ticks)} ticks): the kernels do not release the GIL")


# ---------------------------------------------------------------------------------------------
# leaks

LEAK_SCRIPT = textwrap.dedent("""
    import gc, json, os, sys
    import numpy as np
    import im2row

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    rng = np.random.default_rng(0)
    methods = [m for m in ("i2r", "im2row", "blocked", "numpy", "im2col", "auto")
               if im2row.backend_info()["compiled"] or m not in ("i2r", "im2row", "blocked")]
    x = rng.standard_normal((1, 8, 24, 24)).astype(np.float32)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    wh = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    b = rng.standard_normal(8).astype(np.float32)
    # big enough that leaking packed weights (about 36 KiB a plan) would show
    wbig = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)
    xbig = rng.standard_normal((1, 16, 6, 6)).astype(np.float32)
    bad_out = np.empty((1, 8, 5, 5), np.float32)

    def calls(k):
        for i in range(k):
            m = methods[i % len(methods)]
            nt = 1 + i % 2
            if i % 2:
                im2row.conv2d(x, w, b, padding=1, method=m, num_threads=nt)
            else:
                im2row.conv2d(xh, wh, None, stride=2, layout="NHWC", method=m, num_threads=nt)
            if i % 10 == 0:        # a plan creation, a call, and a call that fails its checks
                plan = im2row.Conv2d(wbig, padding=1, method=m, activation="relu")
                plan(xbig, num_threads=nt)
                try:
                    im2row.conv2d(x, w, b, padding=1, method=m, out=bad_out)
                except ValueError:
                    pass
                else:
                    raise SystemExit("bad out accepted")

    calls(200)                     # warm-up: thread pools, arenas, caches
    gc.collect()
    calls(200)
    gc.collect()
    r200 = rss()
    calls(1800)                    # 2,000 calls and 200 plan creations in all
    gc.collect()
    r2000 = rss()
    print(json.dumps({"rss200": r200, "rss2000": r2000}))
""")


@pytest.mark.skipif(sanitized(), reason="RSS is meaningless under AddressSanitizer's "
                                        "quarantine")
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_leaks_rss_is_flat():
    proc = subprocess.run([sys.executable, "-c", LEAK_SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = r["rss2000"] - r["rss200"]
    assert grown < 4 * MiB, (f"RSS grew by {grown / MiB:.1f} MiB from call 200 to call 2,000 "
                             f"({r['rss200'] / MiB:.1f} -> {r['rss2000'] / MiB:.1f} MiB)")


# ---------------------------------------------------------------------------------------------
# large images

BIG_X = (1, 16, 4096, 4096)
BIG_W = (16, 16, 3, 3)


@needs_compiled
@pytest.mark.parametrize("num_threads", [1, 2, 4])
def test_large_image_i2r_workspace_is_a_few_mib(num_threads):
    ws = im2row.workspace_bytes(BIG_X, BIG_W, padding=1, method="i2r",
                                num_threads=num_threads)
    col = im2row.workspace_bytes(BIG_X, BIG_W, padding=1, method="im2col")
    assert ws["method"] == "i2r"
    # per thread: one strip (4098 rows x 3 taps x 16 channels, 0.8 MiB) and, for NCHW,
    # buffers of 16 columns to transpose input and output (4096 rows x 16 x 16 channels,
    # 4 MiB each): a few MiB, independent of the image's width
    assert ws["workspace"] <= 12 * MiB * num_threads, ws
    narrow = im2row.workspace_bytes(BIG_X[:3] + (64,), BIG_W, padding=1, method="i2r",
                                    num_threads=num_threads)
    assert ws["workspace"] == narrow["workspace"], (ws, narrow)
    assert col["workspace"] >= 9 * (1 << 30), col           # im2col: the 9 GiB column matrix
    assert ws["workspace"] / num_threads * 1000 < col["workspace"]
    nhwc = im2row.workspace_bytes((1, 4096, 4096, 16), (3, 3, 16, 16), padding=1,
                                  method="i2r", layout="NHWC", num_threads=num_threads)
    assert nhwc["workspace"] <= 1 * MiB * num_threads, nhwc     # the strip alone


def _direct_pixels(x, w, b, pixels):
    """y[0, oc, i, j] of a 3x3 padding=1 convolution as plain dot products in float64."""
    c, h, wd = x.shape[1:]
    vals = []
    for oc, i, j in pixels:
        acc = float(b[oc])
        for kh in range(3):
            for kw in range(3):
                r, s = i + kh - 1, j + kw - 1
                if 0 <= r < h and 0 <= s < wd:
                    acc += float(np.dot(x[0, :, r, s].astype(np.float64),
                                        w[oc, :, kh, kw].astype(np.float64)))
        vals.append(acc)
    return np.array(vals)


def _edge_pixels(h, wd, oc):
    return [(0, 0, 0), (oc - 1, h - 1, wd - 1), (3, 0, wd - 1), (5, h - 1, 0), (7, h // 2, 1),
            (oc // 2, 1, wd // 2), (2, h - 2, wd - 2), (oc - 1, 2047, 13 % wd)]


@needs_compiled
def test_tall_image_runs_in_its_predicted_workspace():
    """A 4096-row image (the large test's strip height, but 16 columns wide so it runs in
    milliseconds): the workspace the kernels report is the prediction, and the pixels at the
    edges match direct dot products."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 16, 4096, 16)).astype(np.float32)
    w = rng.uniform(-1, 1, BIG_W).astype(np.float32)
    b = rng.uniform(-1, 1, 16).astype(np.float32)
    plan = im2row.Conv2d(w, b, padding=1, method="i2r")
    for nt in (1, 2):
        y, info = plan.measure(x, num_threads=nt)
        pred = im2row.workspace_bytes(x.shape, w.shape, padding=1, method="i2r",
                                      num_threads=nt)
        assert info["workspace"] == pred["workspace"] <= 12 * MiB * nt, (info, pred)
        px = _edge_pixels(4096, 16, 16)
        got = np.array([y[0, oc, i, j] for oc, i, j in px])
        np.testing.assert_allclose(got, _direct_pixels(x, w, b, px), atol=1e-4)


@needs_compiled
@pytest.mark.skipif(not LARGE, reason="takes seconds and 2 GiB; set IM2ROW_LARGE_TESTS=1")
def test_large_image_runs_with_i2r():
    rng = np.random.default_rng(2)
    x = np.empty(BIG_X, np.float32)
    for c in range(16):
        x[0, c] = rng.uniform(-1, 1, BIG_X[2:]).astype(np.float32)
    w = rng.uniform(-1, 1, BIG_W).astype(np.float32)
    b = rng.uniform(-1, 1, 16).astype(np.float32)
    y, info = im2row.Conv2d(w, b, padding=1, method="i2r").measure(x, num_threads=2)
    pred = im2row.workspace_bytes(BIG_X, BIG_W, padding=1, method="i2r", num_threads=2)
    assert info["workspace"] == pred["workspace"] <= 2 * 12 * MiB
    px = _edge_pixels(4096, 4096, 16)
    got = np.array([y[0, oc, i, j] for oc, i, j in px])
    np.testing.assert_allclose(got, _direct_pixels(x, w, b, px), atol=1e-4)


def test_large_image_im2col_warns_or_refuses_before_allocating():
    """im2col would need a 9 GiB column matrix: it refuses (MemoryError) on a machine with
    less than 18 GiB, else warns (RuntimeWarning). With the warning turned into an error the
    call stops before allocating anything: x is a zero-stride view and the (1 GiB) output is
    only reserved, never touched."""
    x = np.broadcast_to(np.float32(1), BIG_X)
    w = np.ones(BIG_W, np.float32)
    need = im2row.workspace_bytes(BIG_X, BIG_W, padding=1, method="im2col")["copied"]
    assert need == 16 * 9 * 4096 * 4096 * 4
    expect = MemoryError if need > _numpy_conv._physical_memory() // 2 else RuntimeWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(expect, match=r"method='im2col' .*\d+\.\d GiB"):
            im2row.conv2d(x, w, padding=1, method="im2col")
        with pytest.raises(expect, match=r"method='im2col' .*\d+\.\d GiB"):
            im2row.Conv2d(w, padding=1, method="im2col")(x)


def _small():
    rng = np.random.default_rng(5)
    return (rng.standard_normal((2, 3, 9, 8)).astype(np.float32),
            rng.standard_normal((4, 3, 3, 3)).astype(np.float32))


def test_im2col_warning_path(monkeypatch):
    """The warning path on a small input (threshold lowered): RuntimeWarning naming the
    size and the alternative, attributed to the caller's line, and still the right result."""
    x, w = _small()
    monkeypatch.setattr(_numpy_conv, "IM2COL_WARN_BYTES", 0)
    for run in (lambda: im2row.conv2d(x, w, padding=1, method="im2col"),
                lambda: im2row.Conv2d(w, padding=1, method="im2col")(x)):
        with pytest.warns(RuntimeWarning, match=r"allocates a 0\.0 GiB column matrix; "
                                                 r"method='i2r'") as rec:
            y = run()
        np.testing.assert_allclose(y, conv2d_reference(x, w, padding=1), atol=1e-4)
        assert rec[0].filename == __file__, (
            f"the warning points at {rec[0].filename}:{rec[0].lineno}, not at the caller")
    for m in ("numpy", "auto"):       # only im2col materialises the column matrix
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            im2row.conv2d(x, w, padding=1, method=m)


def test_im2col_refusal_path(monkeypatch):
    """The refusal path on a small input (the machine made small): MemoryError before any
    work, `out` untouched."""
    x, w = _small()
    monkeypatch.setattr(_numpy_conv, "_physical_memory", lambda: 4096)
    out = np.full((2, 4, 9, 8), np.nan, np.float32)
    with pytest.raises(MemoryError, match=r"more than half of this machine's memory; use "
                                          r"method='i2r'"):
        im2row.conv2d(x, w, padding=1, method="im2col", out=out)
    assert np.isnan(out).all()
    y = im2row.conv2d(x, w, padding=1, method="numpy")       # the suggested fallback works
    np.testing.assert_allclose(y, conv2d_reference(x, w, padding=1), atol=1e-4)


@needs_compiled
def test_nhwc_threads_agree_with_reference_on_tile_edges():
    """Both layouts, both compiled methods and several thread counts on a shape at the
    register-tile edges (OC = NR + 1, OH = MR + 1 rows per strip) agree exactly with each
    other and with the reference."""
    rng = np.random.default_rng(11)
    x = rng.integers(-8, 9, (2, 5, 15, 33)).astype(np.float32)
    w = rng.integers(-8, 9, (33, 5, 3, 2)).astype(np.float32)
    check_threads_exact(x, w, ((1, 0), (2, 1)), ("i2r", "im2row", "blocked"), (1, 2, 3, 5))


def check_threads_exact(x, w, padding, methods, thread_counts):
    """Integer-valued NCHW x, w: every method and thread count, in both layouts, gives the
    reference's values exactly."""
    ref = conv2d_reference(x, w, None, 1, padding, 1, 1)
    xh, wh = to_nhwc(x, w)
    for nt in thread_counts:
        for m in methods:
            y = im2row.conv2d(x, w, padding=padding, method=m, num_threads=nt)
            np.testing.assert_array_equal(y, ref, err_msg=f"{m} NCHW {nt} threads")
            yh = im2row.conv2d(xh, wh, padding=padding, layout="NHWC", method=m,
                               num_threads=nt)
            np.testing.assert_array_equal(np.moveaxis(yh, -1, 1), ref,
                                          err_msg=f"{m} NHWC {nt} threads")


def test_row_chunks_shared_among_threads_agree():
    """289 output pixels (a 7x1 at 17x17, Inception's) make 3 row chunks by size, which the
    planner evens out per thread count (2 on 2 threads, 4 on 4): every split gives the
    reference's values exactly, as does the 1-thread call."""
    rng = np.random.default_rng(12)
    x = rng.integers(-4, 5, (1, 24, 17, 17)).astype(np.float32)
    w = rng.integers(-4, 5, (40, 24, 7, 1)).astype(np.float32)
    check_threads_exact(x, w, ((3, 3), (0, 0)), ("im2row", "blocked"), (1, 2, 3, 4))
