"""Finds the compiled extension, or says why it is not there.

``IM2ROW_FORCE_NUMPY=1`` (read at import) makes the package act as if the extension were missing,
so the NumPy fallback can be tested on a machine that has the extension. ``IM2ROW_ISA`` forces a
kernel level (``generic``, ``avx2``, ``avx512``) at or below what the CPU supports.
"""
import os
import warnings

ISA_NAMES = ("generic", "avx2", "avx512")

native = None
unavailable_reason = None
# Fill each new strip with NaN instead of leaving it unset, so that a kernel reading a stale
# slot or an unwritten row gives NaN (tests switch it on; it costs a memset per call).
debug_strip = os.environ.get("IM2ROW_DEBUG_STRIP", "") not in ("", "0")

if os.environ.get("IM2ROW_FORCE_NUMPY", "") not in ("", "0"):
    unavailable_reason = "IM2ROW_FORCE_NUMPY is set"
else:
    try:
        from . import _native as native
    except ImportError as exc:   # a broken or missing build must not break `import im2row`
        here = os.path.dirname(os.path.abspath(__file__))
        if not any(f.startswith("_native.") and f.endswith((".so", ".pyd"))
                   for f in os.listdir(here)):
            unavailable_reason = (
                f"the compiled extension was not built in {here} (a source checkout? install "
                f"with `pip install .` and run outside the source tree, or build in place "
                f"with `pip install -e .`)")
        else:
            unavailable_reason = f"the compiled extension im2row._native failed to import: {exc}"

def _after_fork_in_child():
    # GNU OpenMP's thread pool does not survive fork(): a multi-threaded region in the child
    # of a parent that ran one hangs. LLVM's libomp (the clang build) mostly does, but a child
    # forked while the parent's workers were still spin-waiting hung once in CI. PyTorch does
    # the same for every runtime: one thread after fork.
    native.run_on_one_thread()


if native is not None and native.openmp() and hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

if native is None:
    warnings.warn(f"im2row: using the NumPy fallback ({unavailable_reason}); "
                  f"method='auto' will use method='numpy'", RuntimeWarning, stacklevel=3)


def _initial_isa():
    if native is None:
        return "none"
    best = native.cpu_isa()
    want = os.environ.get("IM2ROW_ISA", "").strip().lower()
    if not want:
        return best
    if want not in ISA_NAMES:
        warnings.warn(f"im2row: IM2ROW_ISA={want!r} is not one of {ISA_NAMES}; using {best!r}",
                      RuntimeWarning, stacklevel=3)
        return best
    if ISA_NAMES.index(want) > ISA_NAMES.index(best):
        warnings.warn(f"im2row: IM2ROW_ISA={want!r} is not supported by this CPU; using "
                      f"{best!r}", RuntimeWarning, stacklevel=3)
        return best
    return want


_isa = _initial_isa()


def isa():
    """The kernel level new plans use."""
    return _isa


def set_isa(name):
    """Force the kernel level of plans made from now on (a testing hook; IM2ROW_ISA does the same
    at import). Returns the previous level."""
    global _isa
    if native is None:
        raise RuntimeError(f"im2row: no compiled kernels to choose from: {unavailable_reason}")
    best = native.cpu_isa()
    if name not in ISA_NAMES or ISA_NAMES.index(name) > ISA_NAMES.index(best):
        supported = ISA_NAMES[:ISA_NAMES.index(best) + 1]
        raise ValueError(f"set_isa: isa must be one of {supported} on this CPU, got {name!r}")
    previous, _isa = _isa, name
    return previous


def require_native(method):
    if native is None:
        raise RuntimeError(f"im2row: method={method!r} needs the compiled extension, which is "
                           f"unavailable: {unavailable_reason}. Use method='numpy' or 'auto', "
                           f"or reinstall im2row with a C compiler.")
    return native


def cpu_count():
    """Threads a call uses by default: the CPUs this process may run on, capped by the OpenMP
    runtime's own limit, so that OMP_NUM_THREADS and threadpoolctl's threadpool_limits (which
    call omp_set_num_threads in every OpenMP runtime loaded) limit im2row's pool too."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    if native is not None and native.openmp():
        n = min(n, max(1, native.max_threads()))
    return n
