"""im2row beside other OpenMP runtimes and across fork().

- PyTorch bundles its own libgomp; a repaired im2row wheel bundles another (im2row.libs/).
  In one process both must compute right, and threadpoolctl must see im2row's pool and limit
  it (threadpool_limits calls omp_set_num_threads in every runtime; im2row's default thread
  count follows omp_get_max_threads).
- A child forked after a multi-threaded call must convolve (GNU OpenMP's pool does not
  survive fork: im2row then runs the child's calls on one thread instead of hanging).
Each runs in a subprocess, with a timeout, so a hang or a crash is a failed test.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import im2row
from im2row import _backend

needs_openmp = pytest.mark.skipif(_backend.native is None or not _backend.native.openmp(),
                                  reason="needs the compiled extension with OpenMP")
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_child(code, timeout=120):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IM2ROW_", "OMP_", "OPENBLAS_NUM"))}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=TESTS_DIR, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FORK_CODE = """
    import json, multiprocessing as mp, queue
    import numpy as np, im2row
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 40, 40)).astype(np.float32)
    w = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)
    plan = im2row.Conv2d(w, padding=1)
    ref, info = plan.measure(x, num_threads=2)       # a multi-threaded call before fork
    assert info["threads"] == 2, info

    def child(q):
        a = im2row.conv2d(x, w, padding=1, num_threads=2)
        b, inf = plan.measure(x)
        c = im2row.conv2d(x, w, padding=1, method="blocked")
        q.put([bool(np.array_equal(a, ref)), bool(np.array_equal(b, ref)),
               bool(np.allclose(c, ref, rtol=1e-4, atol=1e-4)), inf["threads"]])

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    try:
        got = q.get(timeout=60)
    except queue.Empty:
        p.kill()
        got = "the child hung"
    p.join(30)
    # and the parent still runs multi-threaded
    again, info = plan.measure(x, num_threads=2)
    print(json.dumps({"child": got, "exitcode": p.exitcode,
                      "parent": [bool(np.array_equal(again, ref)), info["threads"]]}))
"""


@needs_openmp
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_after_a_multithreaded_call():
    res = run_child(FORK_CODE)
    assert res["child"] != "the child hung", res
    assert res["exitcode"] == 0, res
    same_a, same_b, close_c, threads = res["child"]
    assert same_a and same_b and close_c, res
    assert threads >= 1
    assert res["parent"] == [True, 2], res


TORCH_CODE = """
    import json, os, sys
    first = FIRST
    if first == "torch":
        import torch, im2row
    else:
        import im2row, torch
    import numpy as np, threadpoolctl
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 30, 30)).astype(np.float32)
    w = rng.standard_normal((128, 16, 3, 3)).astype(np.float32)
    plan = im2row.Conv2d(w, padding=1)
    ours, info_all = plan.measure(x)
    theirs = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                        padding=1).numpy()
    pools = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "openmp"]
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(im2row.__file__)))
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        _, info_one = plan.measure(x)
        ours_one = im2row.conv2d(x, w, padding=1)
        theirs_one = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                                padding=1).numpy()
    _, info_after = plan.measure(x)
    print(json.dumps({
        "close": bool(np.allclose(ours, theirs, rtol=1e-4, atol=1e-3)),
        "same_limited": bool(np.array_equal(ours_one, ours)) and
                        bool(np.allclose(theirs_one, theirs, rtol=1e-5, atol=1e-4)),
        "pools": [p["filepath"] for p in pools],
        "pkg": pkg,
        "threads": [info_all["threads"], info_one["threads"], info_after["threads"]],
    }))
"""


@needs_openmp
@pytest.mark.parametrize("first", ["torch", "im2row"])
def test_beside_pytorchs_openmp(first):
    pytest.importorskip("torch")
    pytest.importorskip("threadpoolctl")
    res = run_child(TORCH_CODE.replace("FIRST", repr(first)))
    assert res["close"] and res["same_limited"], res
    # im2row's own runtime is among the pools threadpoolctl sees
    libs = os.path.join(res["pkg"], "im2row.libs")
    if os.path.isdir(libs):
        # a repaired wheel: its bundled libgomp, distinct from PyTorch's
        ours = [p for p in res["pools"] if p.startswith(libs)]
        assert ours, res
        assert any(not p.startswith(libs) for p in res["pools"]), res
    assert res["pools"], res
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    if cores >= 2:
        assert res["threads"][0] == 2 and res["threads"][2] == 2, res
    assert res["threads"][1] == 1, res           # threadpool_limits limits im2row's pool


@needs_openmp
def test_repaired_wheel_bundles_its_runtime():
    """When this is an installed repaired wheel (as .ci/run tests), the extension loads the
    libgomp copy in im2row.libs/, not the system's."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(im2row.__file__)))
    libs = os.path.join(pkg, "im2row.libs")
    if not os.path.isdir(libs):
        pytest.skip("not an auditwheel-repaired installation")
    with open("/proc/self/maps") as f:
        maps = f.read()
    assert any(os.path.join(libs, name) in maps for name in os.listdir(libs)), os.listdir(libs)
