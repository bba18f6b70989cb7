"""Build of the compiled extension im2row._native (Cython glue + C kernels).

Environment variables:
  IM2ROW_NO_OPENMP=1   build without OpenMP (the kernels then run on one thread)
  IM2ROW_SANITIZE=1    build with -fsanitize=address,undefined (for the sanitizer CI step)
ISA-specific flags are set per function in the kernel sources (#pragma GCC target for gcc,
#pragma clang attribute for clang), never for the whole build: the same wheel runs on any
x86-64 (and the generic kernel elsewhere). CC=clang builds too (OpenMP needs libomp-dev).
"""
import os
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup

CSRC = "im2row/csrc"


def _compiler_accepts(flags):
    """True if the C compiler builds and links an OpenMP program with these flags."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        # CFLAGS/LDFLAGS as the build will pass them (macOS: libomp's include and lib paths)
        env_flags = (os.environ.get("CFLAGS", "") + " " + os.environ.get("LDFLAGS", "")).split()
        cmd = cc.split() + [path, "-o", os.path.join(tmp, "t")] + env_flags + flags
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


def _accepts_flag(flag):
    """True if the C compiler compiles a trivial file with this flag (clang, for one, refuses
    some of gcc's -f options)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write("int f(void) { return 0; }\n")
        cmd = cc.split() + ["-c", path, "-o", os.path.join(tmp, "t.o"), "-Werror", flag]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


def _openmp_flags():
    """(compile flags, link flags) for OpenMP, or ([], []) to build single-threaded kernels.
    gcc and clang with libomp: -fopenmp. Apple clang: -Xpreprocessor -fopenmp and -lomp
    (Homebrew's libomp, its paths in CFLAGS/LDFLAGS; see [tool.cibuildwheel.macos])."""
    if os.environ.get("IM2ROW_NO_OPENMP", "") not in ("", "0"):
        return [], []
    if sys.platform != "win32" and _compiler_accepts(["-fopenmp"]):
        return ["-fopenmp"], ["-fopenmp"]
    if sys.platform == "darwin" and _compiler_accepts(["-Xpreprocessor", "-fopenmp", "-lomp"]):
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    print("im2row: OpenMP not available, building single-threaded kernels", file=sys.stderr)
    return [], []


omp, omp_link = _openmp_flags()
# -fno-tree-loop-distribute-patterns (gcc): short channel copies stay loops (see
# copy_channels); clang has no such option and builds without it
compile_args = ["-O3", "-std=c11", "-fno-math-errno", "-Werror=implicit-function-declaration"]
if _accepts_flag("-fno-tree-loop-distribute-patterns"):
    compile_args.append("-fno-tree-loop-distribute-patterns")
compile_args += omp
link_args = list(omp_link)
if os.environ.get("IM2ROW_SANITIZE", "") not in ("", "0"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
    compile_args += san
    link_args += san

sources = ["im2row/_native.pyx"] + sorted(
    os.path.join(CSRC, f) for f in os.listdir(CSRC) if f.endswith(".c"))

ext = Extension(
    "im2row._native",
    sources=sources,
    include_dirs=[CSRC],
    depends=[os.path.join(CSRC, f) for f in os.listdir(CSRC) if f.endswith(".h")],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=[("I2R_HAVE_OPENMP", "1")] if omp else [],
)

from Cython.Build import cythonize  # noqa: E402  (a build requirement, see pyproject.toml)

setup(ext_modules=cythonize([ext], language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False}))
