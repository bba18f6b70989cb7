"""The machine's float32 FMA peak, measured: register-only FMA loops (bench/fma_probe.c).

The C file is compiled once with the system C compiler ($CC, else cc, gcc or clang) into a
cache directory under the temporary directory, keyed by a hash of the source and the compiler,
and loaded with ctypes. Only the loops the CPU supports are run (from /proc/cpuinfo's flags).

Per ISA the loop is timed on one thread, then on T Python threads at once for each thread
count T of the run (ctypes releases the GIL, so they run in parallel): the GFLOP/s of all
threads together. The peak at T threads, the denominator of every "% peak", is the best ISA's.
On a CPU whose AVX-512 is double-pumped (AMD Zen 4) the zmm loop is no faster than the ymm
one; that is what this shows.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SOURCE = Path(__file__).with_name("fma_probe.c")
# ISA -> the /proc/cpuinfo flags its loop needs
ISA_FLAGS = {"avx512": ("avx512f",), "avx2": ("avx2", "fma")}
CALIBRATION_ITERATIONS = 1000


def find_compiler():
    """The C compiler to build the probe with: $CC, else cc, gcc, clang; None if none."""
    candidates = [os.environ.get("CC"), "cc", "gcc", "clang"]
    for name in filter(None, candidates):
        path = shutil.which(name.split()[0])
        if path:
            return path
    return None


def cache_path(compiler, source_text):
    """Where the compiled probe lives: one file per (source, compiler)."""
    key = hashlib.sha256((compiler + "\0" + source_text).encode()).hexdigest()[:16]
    user = getattr(os, "getuid", lambda: "user")()
    return Path(tempfile.gettempdir()) / f"im2row-bench-{user}" / f"fma_probe_{key}.so"


def build_probe(compiler=None):
    """(path of the shared library, None) or (None, why not). Compiles only if not cached."""
    compiler = compiler or find_compiler()
    if compiler is None:
        return None, "no C compiler found ($CC, cc, gcc, clang): FMA peak not measured"
    source_text = SOURCE.read_text()
    target = cache_path(compiler, source_text)
    if target.is_file():
        return target, None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    command = [compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"compiling the FMA probe failed ({exc}): FMA peak not measured"
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        return None, (f"compiling the FMA probe failed ({' '.join(command)}): "
                      f"{proc.stderr.strip()[:300]}")
    os.replace(partial, target)        # atomic: a concurrent run never loads a partial file
    return target, None


def supported_isas(flags):
    """The probe's ISAs this CPU has, widest first, from a set of /proc/cpuinfo flags."""
    return [isa for isa, needed in ISA_FLAGS.items() if all(f in flags for f in needed)]


class FmaLoops:
    """The compiled loops: ``run(isa, iterations)`` and ``flops(isa, iterations)``."""

    def __init__(self, path):
        self.library = ctypes.CDLL(str(path))
        self.functions, self.flops_per_iteration = {}, {}
        for isa in ISA_FLAGS:
            fn = getattr(self.library, f"fma_{isa}")
            fn.argtypes, fn.restype = [ctypes.c_long], ctypes.c_float
            count = getattr(self.library, f"fma_{isa}_flops_per_iteration")
            count.restype = ctypes.c_int
            self.functions[isa], self.flops_per_iteration[isa] = fn, count()

    def run(self, isa, iterations):
        """The loop's checksum (finite: the accumulators converge to 1)."""
        return self.functions[isa](iterations)

    def flops(self, isa, iterations):
        return self.flops_per_iteration[isa] * iterations


def parallel_seconds(loops, isa, iterations, threads):
    """Wall seconds for ``threads`` Python threads each running the loop once, started
    together."""
    barrier = threading.Barrier(threads + 1)

    def work():
        barrier.wait()
        loops.run(isa, iterations)
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def loop_gflops(loops, isa, threads, seconds, repeats):
    """GFLOP/s of ``threads`` threads running the loop together (best of ``repeats``, each
    about ``seconds`` long)."""
    t = parallel_seconds(loops, isa, CALIBRATION_ITERATIONS, 1)
    iterations = max(CALIBRATION_ITERATIONS, int(CALIBRATION_ITERATIONS * seconds / max(t, 1e-9)))
    best = min(parallel_seconds(loops, isa, iterations, threads) for _ in range(repeats))
    return threads * loops.flops(isa, iterations) / best / 1e9


def measure_peak(thread_counts, cpu_flags, seconds=0.1, repeats=3):
    """The probe's record for a run (JSON-ready)::

        {"compiler", "library", "error", "isas",
         "rates": [{"isa", "threads", "gflops", "gflops_per_thread"}],
         "peak": [{"threads", "gflops", "isa"}]}

    ``error`` says why nothing was measured (no compiler, no supported ISA); then ``rates``
    and ``peak`` are empty and the tables leave the % peak columns out."""
    record = {"compiler": find_compiler(), "library": None, "error": None,
              "isas": supported_isas(set(cpu_flags)), "rates": [], "peak": [],
              "seconds_per_loop": seconds}
    if not record["isas"]:
        record["error"] = "the CPU has neither AVX-512F nor AVX2+FMA: FMA peak not measured"
        return record
    path, error = build_probe(record["compiler"])
    if error:
        record["error"] = error
        return record
    record["library"] = str(path)
    try:
        loops = FmaLoops(path)
    except (OSError, AttributeError) as exc:     # e.g. a temporary directory mounted noexec
        record["error"] = f"loading the FMA probe {path} failed ({exc}): FMA peak not measured"
        return record
    for threads in sorted(set(thread_counts)):
        best = None
        for isa in record["isas"]:
            gflops = loop_gflops(loops, isa, threads, seconds, repeats)
            record["rates"].append({"isa": isa, "threads": threads, "gflops": gflops,
                                    "gflops_per_thread": gflops / threads})
            if best is None or gflops > best["gflops"]:
                best = {"threads": threads, "gflops": gflops, "isa": isa}
        record["peak"].append(best)
    return record


def combine(records):
    """One record from measurements at the start and the end of a run: per (ISA, threads) the
    better rate (a busy moment on a shared machine only lowers a rate), and the peak from
    those. The measurements themselves are kept under "measurements"."""
    records = [r for r in records if r]
    if not records:
        return None
    best = {}
    for r in records:
        for rate in r["rates"]:
            key = (rate["isa"], rate["threads"])
            if key not in best or rate["gflops"] > best[key]["gflops"]:
                best[key] = rate
    combined = dict(records[0], rates=list(best.values()), peak=[],
                    measurements=[{"rates": r["rates"], "error": r["error"]} for r in records])
    for threads in sorted({t for _, t in best}):
        top = max((rate for (_, t), rate in best.items() if t == threads),
                  key=lambda rate: rate["gflops"])
        combined["peak"].append({"threads": threads, "gflops": top["gflops"],
                                 "isa": top["isa"]})
    return combined


def peak_gflops(record, threads):
    """The peak (GFLOP/s, all threads) at a thread count, or None if not measured."""
    for entry in (record or {}).get("peak", []):
        if entry["threads"] == threads:
            return entry["gflops"]
    return None


def describe(record):
    """One line: 'FMA peak (register loops): avx512 114.9, avx2 115.2 GFLOP/s per core; 2
    threads 229.1 (avx2)', or why it was not measured."""
    if not record:
        return "FMA peak: not measured"
    if record.get("error"):
        return "FMA peak: " + record["error"]
    one = [r for r in record["rates"] if r["threads"] == 1]
    parts = [", ".join(f"{r['isa']} {r['gflops']:.1f}" for r in one) + " GFLOP/s per core"
             if one else ""]
    for p in record["peak"]:
        if p["threads"] > 1:
            per_isa = ", ".join(f"{r['isa']} {r['gflops']:.1f}" for r in record["rates"]
                                if r["threads"] == p["threads"])
            parts.append(f"{p['threads']} threads together {per_isa}")
    return "FMA peak (register-only FMA loops): " + "; ".join(filter(None, parts))
