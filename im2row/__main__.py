"""`python -m im2row`: a self-check of this installation.

Prints backend_info(), runs one convolution with every available method on a sample input,
checks them against each other and prints the median times.
"""
import sys
import time

import numpy as np

import im2row
from im2row._api import COMPILED_METHODS, WINOGRAD_TILES


def _median_time(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    info = im2row.backend_info()
    print("im2row", info["version"])
    for key, value in info.items():
        print(f"  {key:12} {value}")
    rng = np.random.default_rng(0)
    n, c, h, w, oc = 1, 64, 56, 56, 64
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = (rng.standard_normal((oc, c, 3, 3)) / np.sqrt(c * 9)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    flops = 2 * n * oc * h * w * c * 9
    methods = ["numpy", "im2col"] + (list(COMPILED_METHODS) + list(WINOGRAD_TILES)
                                     if info["compiled"] else [])
    print(f"\nconv2d x={x.shape} weight={weight.shape} padding=1, float32, "
          f"{info['max_threads']} threads")
    expected = im2row.conv2d(x.astype(np.float64), weight.astype(np.float64),
                             bias.astype(np.float64), padding=1, method="numpy")
    ok = True
    for method in methods:
        result = im2row.conv2d(x, weight, bias, padding=1, method=method)
        err = float(np.abs(result - expected).max())
        good = err < 1e-3
        ok &= good
        t = _median_time(lambda: im2row.conv2d(x, weight, bias, padding=1, method=method))
        print(f"  {method:9} {t * 1e3:8.2f} ms  {flops / t / 1e9:7.1f} GFLOP/s  "
              f"max |error| vs float64 {err:.1e}  {'ok' if good else 'MISMATCH'}")
    print("\nself-check", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
