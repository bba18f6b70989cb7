"""The machine description saved with every run: CPU, ISA, libraries, BLAS kernel, threads."""
import datetime
import os
import platform
import sys

import numpy as np

import im2row

# run.py removes these from its own environment before numpy loads OpenBLAS, and passes what
# it removed on to the re-executed process in this variable.
UNSET_VARIABLE = "IM2ROW_BENCH_UNSET_OPENBLAS"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    """The AVX-512/AVX2/FMA flags the kernel reports (for the record)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "fma")))
    except OSError:
        pass
    return []


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def unset_openblas_variables():
    """{name: value} of the OPENBLAS_* variables run.py removed before numpy was imported."""
    text = os.environ.get(UNSET_VARIABLE, "")
    return dict(item.split("=", 1) for item in text.split(";") if "=" in item)


def threadpools():
    """threadpoolctl.threadpool_info(): which BLAS/OpenMP libraries are loaded, their kernel
    ('architecture', e.g. SkylakeX or Haswell for OpenBLAS) and thread counts."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl.threadpool_info()


def openblas_kernel(pools):
    """'OpenBLAS 0.3.x, SkylakeX kernel, 2 threads' from threadpool_info, or a reason."""
    if pools is None:
        return "unknown (threadpoolctl not installed: pip install threadpoolctl)"
    blas = [p for p in pools if p.get("user_api") == "blas"]
    if not blas:
        return "no BLAS library found by threadpoolctl"
    return "; ".join(f"{p.get('internal_api')} {p.get('version')}, "
                     f"{p.get('architecture', '?')} kernel, {p.get('num_threads')} threads "
                     f"({os.path.basename(p.get('filepath', ''))})" for p in blas)


def library_versions(torch):
    versions = {"python": sys.version.split()[0], "numpy": np.__version__,
                "im2row": im2row.__version__, "torch": None, "onnxruntime": None, "onnx": None,
                "threadpoolctl": None, "matplotlib": None}
    if torch is not None:
        versions["torch"] = torch.__version__
    for name in ("onnxruntime", "onnx", "threadpoolctl", "matplotlib"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception:      # missing or broken: recorded as None
            pass
    return versions


def load_average():
    """The 1-minute load average (None where unknown): other processes' use of the cores."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def describe_machine(torch, torch_note, onnx_note=None):
    pools = threadpools()
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpus_available": available_cpus(),
        "load_average_at_start": load_average(),
        "im2row_backend": im2row.backend_info(),
        "versions": library_versions(torch),
        "openblas_env_unset": unset_openblas_variables(),
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "openblas_kernel": openblas_kernel(pools),
        "threadpools": pools,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "torch_note": torch_note,
        "onnx_note": onnx_note,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    if torch is not None:
        info["torch_config"] = {"mkldnn": bool(torch.backends.mkldnn.is_available()),
                                "cpu_capability": _torch_cpu_capability(torch)}
    return info


def _torch_cpu_capability(torch):
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:
        return None
