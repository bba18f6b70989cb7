"""Convolve a zarr array into a zarr array, out of core, with im2row.dask.conv2d.

    pip install "im2row[zarr]"          # dask[array], distributed, zarr

    # a synthetic input (uniform random float32, uncompressed), written chunk by chunk
    python examples/zarr_conv.py make in.zarr --shape 1,16,8192,8192 --chunks 1,16,1024,1024
    # the convolution: 3x3, 16 -> 16 channels, "same" padding, 2 worker processes x 1 thread
    python examples/zarr_conv.py conv in.zarr out.zarr --out-channels 16 --kernel 3 \\
        --workers 2 --threads-per-worker 1 --json run.json

`conv` reads the input store with dask.array.from_zarr, convolves with im2row.dask.conv2d
(padding "same", stride 1: the output has the input's chunks, so each output chunk is one zarr
chunk) and writes the result with dask.array.store, chunk by chunk, with a progress bar
(distributed.progress; dask's ProgressBar with --scheduler threads). It then reports the
wall time, GFLOP/s (2 * multiply-adds), MB/s (input read + output written), the peak
resident memory of each worker process and of this one during the run (Linux: VmHWM after
resetting it through /proc/self/clear_refs; its growth over the RSS at the start), and, for
comparison, the in-memory kernels on the same chunk size: im2row.Conv2d on one chunk plus its
halo, with each worker's thread budget, times the workers. What a worker holds grows with the
number of chunks in a row of the image (dask keeps a chunk until its neighbours' halos are cut
from it), not with the store's size: measured, 4.6-4.9 GiB per worker for a 26 GiB store of
21 x 20 chunks of 64 MiB (README, "Larger than memory").

`check` compares the output with im2row.conv2d on the whole input (small stores only), bit
for bit. tests/test_zarr_example.py runs make, conv and check on a small store in CI and
asserts the bounded memory.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss():
    """Linux: reset this process's high-water mark (VmHWM) to its current RSS, so the next
    _peak_rss_bytes is the peak of what runs in between. Returns the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_bytes("VmRSS")
    except OSError:
        return _peak_rss_bytes()


def _peak_rss_bytes():
    try:
        return _status_bytes("VmHWM")
    except (OSError, KeyError):
        # ru_maxrss is in KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def _weights(c, oc, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.uniform(-1, 1, (oc, c, k, k)) / np.sqrt(c * k * k)).astype(dtype)
    b = rng.uniform(-1, 1, oc).astype(dtype)
    return w, b


def _client(args):
    """(client or None, cluster or None) for --scheduler."""
    if args.scheduler == "threads":
        import dask
        dask.config.set(scheduler="threads", num_workers=args.workers)
        return None, None
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                           processes=True, host="127.0.0.1",   # loopback only
                           dashboard_address="127.0.0.1:0",
                           worker_dashboard_address="127.0.0.1:0",
                           memory_limit=args.memory_limit or "auto")
    return Client(cluster), cluster


def _run(client, collection, label, progress=True):
    """Compute a delayed/collection with a progress bar."""
    if client is None:
        from dask.diagnostics import ProgressBar
        if progress:
            with ProgressBar(minimum=1.0, out=sys.stderr):
                return collection.compute()
        return collection.compute()
    from distributed import progress as dprogress
    future = client.compute(collection)
    if progress:
        print(label, file=sys.stderr)
        dprogress(future)
        print(file=sys.stderr)
    return future.result()


def make(args):
    import dask.array as da
    import zarr
    shape, chunks = _ints(args.shape), _ints(args.chunks)
    client, cluster = _client(args)
    try:
        x = da.random.default_rng(args.seed).random(shape, chunks=chunks, dtype=np.float32)
        z = zarr.create_array(store=args.store, shape=shape, chunks=chunks, dtype=np.float32,
                              compressors=None, overwrite=True)
        t = time.perf_counter()
        _run(client, da.store(x, z, lock=False, compute=False), "writing " + args.store,
             not args.quiet)
        dt = time.perf_counter() - t
    finally:
        if client is not None:
            client.close()
            cluster.close()
    nbytes = int(np.prod(shape)) * 4
    print(f"make: {args.store} shape {shape} chunks {chunks}: {nbytes / 2**30:.2f} GiB in "
          f"{dt:.1f} s ({nbytes / dt / 1e6:.0f} MB/s)")


def _in_memory_gflops(c, oc, k, chunk_hw, threads, dtype, repeats=3):
    """im2row.Conv2d on one chunk with its halo, the best of a few calls: GFLOP/s."""
    import im2row
    w, b = _weights(c, oc, k, dtype)
    h, wd = chunk_hw
    x = np.random.default_rng(1).random((1, c, h + k - 1, wd + k - 1), dtype=dtype)
    plan = im2row.Conv2d(w, b)
    out = plan(x, num_threads=threads)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        plan(x, out=out, num_threads=threads)
        best = min(best, time.perf_counter() - t)
    return 2 * oc * c * k * k * h * wd / best / 1e9


def conv(args):
    import dask.array as da
    import zarr

    import im2row
    import im2row.dask as idask

    x = da.from_zarr(args.input)
    n, c, h, w = x.shape
    dtype = x.dtype
    wt, b = _weights(c, args.out_channels, args.kernel, dtype, args.seed)
    y = idask.conv2d(x, wt, b, padding="same", num_threads=args.num_threads)
    out_chunks = (x.chunksize[0], args.out_channels, x.chunksize[2], x.chunksize[3])
    z = zarr.create_array(store=args.output, shape=y.shape, chunks=out_chunks, dtype=dtype,
                          compressors=None, overwrite=True)
    # da.store writes each dask chunk into its own zarr chunk (they coincide), no lock needed;
    # (da.to_zarr into an existing array would first rechunk to dask's "auto" chunk size,
    # 128 MiB, merging many chunks in one task)
    store = da.store(y, z, lock=False, compute=False)
    client, cluster = _client(args)
    try:
        def peaks(reset=False):
            fn = _reset_peak_rss if reset else _peak_rss_bytes
            if client is None:
                return {"this process": fn()}
            return client.run(fn)
        # warm up: import im2row in every worker (and pack these weights once), so that the
        # memory measured below is the run's, not the imports'
        small = x[:1, :, :args.kernel + 1, :args.kernel + 1]
        _run(client, idask.conv2d(small, wt, b, padding="same").sum(), "warm-up", False)
        before = peaks(reset=True)   # current RSS; the peaks start from here
        driver_before = _reset_peak_rss() if client is not None else 0
        t = time.perf_counter()
        _run(client, store, f"convolving {args.input} -> {args.output}", not args.quiet)
        dt = time.perf_counter() - t
        after, driver_after = peaks(), _peak_rss_bytes()
        info = client.run(im2row.backend_info) if client is not None else {
            "this process": im2row.backend_info()}
        if client is not None:   # asked in a task on each worker (client.run is no task)
            task_threads = {addr: client.submit(idask.task_threads, y.npartitions,
                                                workers=[addr], allow_other_workers=False,
                                                pure=False).result()
                            for addr in client.scheduler_info()["workers"]}
        else:
            task_threads = {"this process": idask.task_threads(y.npartitions)}
    finally:
        if client is not None:
            client.close()
            cluster.close()

    flops = 2 * n * args.out_channels * h * w * c * args.kernel ** 2
    in_bytes, out_bytes = x.nbytes, int(np.prod(y.shape)) * dtype.itemsize
    threads = args.num_threads or max(task_threads.values())
    slots = args.workers * (args.threads_per_worker if args.scheduler == "distributed" else 1)
    mem = _in_memory_gflops(c, args.out_channels, args.kernel, x.chunksize[2:], threads,
                            dtype) * slots
    result = {
        "input": args.input, "output": args.output, "shape": list(x.shape),
        "chunks": list(x.chunksize), "out_channels": args.out_channels,
        "kernel": args.kernel, "scheduler": args.scheduler, "workers": args.workers,
        "threads_per_worker": args.threads_per_worker, "kernel_threads_per_task": threads,
        "input_gib": in_bytes / 2**30, "output_gib": out_bytes / 2**30,
        "tasks": y.npartitions, "seconds": dt,
        "gflops": flops / dt / 1e9, "mb_per_s": (in_bytes + out_bytes) / dt / 1e6,
        "peak_rss_mib": {str(k): v / 2**20 for k, v in after.items()},
        "peak_rss_growth_mib": {str(k): (after[k] - before.get(k, 0)) / 2**20 for k in after},
        "driver_peak_rss_mib": driver_after / 2**20,
        "driver_growth_mib": (driver_after - driver_before) / 2**20 if client else None,
        "chunk_mib": int(np.prod(x.chunksize)) * dtype.itemsize / 2**20,
        "in_memory_gflops_same_chunks": mem,
        "vs_in_memory": flops / dt / 1e9 / mem,
        "isa": sorted({i["isa"] for i in info.values()}),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def check(args):
    import zarr

    import im2row
    x = zarr.open_array(args.input, mode="r")[...]
    y = zarr.open_array(args.output, mode="r")[...]
    wt, b = _weights(x.shape[1], y.shape[1], args.kernel, x.dtype, args.seed)
    ref = im2row.conv2d(x, wt, b, padding="same")
    same = bool(np.array_equal(ref, y))
    print(f"check: {args.output} {'is bit-identical to' if same else 'DIFFERS from'} "
          f"im2row.conv2d on the whole input")
    return 0 if same else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(q):
        q.add_argument("--scheduler", choices=["distributed", "threads"],
                       default="distributed")
        q.add_argument("--workers", type=int, default=2,
                       help="worker processes (distributed) or threads (threads)")
        q.add_argument("--threads-per-worker", type=int, default=1)
        q.add_argument("--memory-limit", default=None,
                       help="per worker, e.g. 4GiB (default: dask's 'auto')")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--quiet", action="store_true", help="no progress bar")

    q = sub.add_parser("make", help="write a synthetic input store")
    q.add_argument("store")
    q.add_argument("--shape", default="1,16,4096,4096", help="N,C,H,W")
    q.add_argument("--chunks", default="1,16,1024,1024")
    common(q)
    q = sub.add_parser("conv", help="convolve a store into a store and report throughput")
    q.add_argument("input")
    q.add_argument("output")
    q.add_argument("--out-channels", type=int, default=16)
    q.add_argument("--kernel", type=int, default=3, help="odd: KxK, 'same' padding")
    q.add_argument("--num-threads", type=int, default=None,
                   help="kernel threads per task (default: the worker's share of cores)")
    q.add_argument("--json", default=None)
    common(q)
    q = sub.add_parser("check", help="compare a (small) output with im2row.conv2d")
    q.add_argument("input")
    q.add_argument("output")
    q.add_argument("--kernel", type=int, default=3)
    q.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "make":
        make(args)
    elif args.cmd == "conv":
        if args.kernel % 2 == 0:
            p.error("--kernel must be odd (same padding keeps the input's chunks)")
        conv(args)
    else:
        return check(args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    sys.exit(main())
