"""examples/zarr_conv.py on small stores, as CI runs it: make, conv (2 worker processes on
loopback, progress bar off), check (bit-identical to im2row.conv2d on the whole input), and
the memory bound: a worker's peak resident memory grows by a few chunks, not with the image
(a store 4x taller, 512 MiB, needs no more memory than one of 128 MiB)."""
import argparse
import importlib.util
import os

import numpy as np
import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")
pytest.importorskip("zarr")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "zarr_conv.py")


def _example():
    spec = importlib.util.spec_from_file_location("zarr_conv", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_zarr_example_bounded_memory(tmp_path):
    ex = _example()
    chunk = (1, 16, 256, 256)                      # 4 MiB a chunk
    results = {}
    for name, height in (("short", 4096), ("tall", 16384)):
        src, dst = str(tmp_path / f"{name}-in.zarr"), str(tmp_path / f"{name}-out.zarr")
        shape = f"1,16,{height},512"
        ex.main(["make", src, "--shape", shape, "--chunks", ",".join(map(str, chunk)),
                 "--quiet", "--scheduler", "threads"])
        results[name] = ex.conv(argparse.Namespace(
            input=src, output=dst, out_channels=16, kernel=3, num_threads=None,
            json=str(tmp_path / f"{name}.json"), scheduler="distributed", workers=2,
            threads_per_worker=1, memory_limit=None, seed=0, quiet=True))
        assert ex.main(["check", src, dst]) == 0
    chunk_mib = np.prod(chunk) * 4 / 2**20
    short, tall = results["short"], results["tall"]
    assert tall["input_gib"] * 1024 == 512 and tall["tasks"] == 128
    grow_short = max(short["peak_rss_growth_mib"].values())
    grow_tall = max(tall["peak_rss_growth_mib"].values())
    # bounded by chunks in flight, not by the image: the 4x taller store (512 MiB) needs at
    # most a few chunks more than the short one (128 MiB; growing with the image would be
    # 384 MiB more), and far less than its size. Measured: 37-85 MiB per worker for either,
    # a spread of 12 chunks between two runs (the chunks in flight vary with scheduling)
    assert grow_tall <= grow_short + 16 * chunk_mib, (short, tall)
    assert grow_tall <= 24 * chunk_mib, tall
    assert tall["driver_growth_mib"] <= 4 * chunk_mib, tall
    assert min(tall["peak_rss_growth_mib"].values()) > 0, tall   # it did measure
    assert tall["gflops"] > 0 and tall["mb_per_s"] > 0
