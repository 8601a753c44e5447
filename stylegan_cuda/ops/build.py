"""Build and load the extension that holds every op's CPU and CUDA kernels.

The extension is compiled just in time by ``torch.utils.cpp_extension`` the first time an op needs it, or ahead of
time by ``STYLEGAN_CUDA_AOT=1 pip install .``. JIT builds are cached under the torch extensions directory (honouring
``TORCH_EXTENSIONS_DIR``) in a folder named by a hash of the sources, the torch version, the compiler flags, the CPU
(its instruction-set flags: the CPU code is built with ``-march=native``) and the CUDA toolkit and targets: a changed
source rebuilds, an unchanged one never does. Concurrent processes (the ranks of a distributed run) build once: the
first takes an ``flock`` on the cache folder, builds into a private folder and moves it into place; the others wait
on the lock and load the result. The operating system releases the lock of a killed build, so no later run hangs on
a stale lock. A finished build records its library's size and SHA-256; a cached library that no longer matches them
(truncated, overwritten) is rebuilt rather than loaded (loading a truncated library crashes the process with
SIGBUS). A finished, intact build is loaded without taking the lock, so a cache on a read-only file system works.

A package installed with ``STYLEGAN_CUDA_AOT=1`` loads its own library (``stylegan_cuda/_C*.so``) unless it was
built against another torch version (torch was upgraded since): then the kernels are built just in time instead.

Environment:
    STYLEGAN_CUDA_BUILD_CUDA  ``auto`` (default: CUDA kernels when torch is a CUDA build, nvcc is found and a GPU
                              is visible), ``1`` (always, e.g. on a machine with nvcc but no GPU) or ``0`` (never).
    TORCH_CUDA_ARCH_LIST      CUDA targets, e.g. ``"8.0;9.0"``; default: the visible GPUs' capabilities, or
                              ``DEFAULT_CUDA_ARCHS`` when no GPU is visible.
    STYLEGAN_CUDA_VERBOSE     ``1`` shows the compiler's output while building.

Run ``python -m stylegan_cuda.build`` to build now and print what was built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

EXTENSION_NAME = "stylegan_cuda_ops"
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Sources: beside the package when installed (setup.py copies them), else the checkout's csrc/.
_SOURCE_DIRS = (_PACKAGE_DIR / "_csrc", _PACKAGE_DIR.parent / "csrc")


@dataclasses.dataclass(frozen=True)
class BuildInfo:
    """What was loaded: where from, whether it has CUDA kernels, for which targets, and how long it took."""

    library: str
    has_cuda: bool
    cuda_archs: str
    how: str  # "jit-built", "jit-cached" or "ahead-of-time"
    seconds: float

    def describe(self) -> str:
        kernels = f"CPU + CUDA ({self.cuda_archs})" if self.has_cuda else "CPU only"
        return f"{kernels}; {self.how} in {self.seconds:.1f} s; {self.library}"


class ExtensionBuildError(RuntimeError):
    """The kernels could not be built or loaded. The message holds the compiler's output."""


FALLBACK_HINT = (
    "Fall back to the pure-PyTorch ops with impl='reference' or STYLEGAN_CUDA_IMPL=reference, or "
    "build without CUDA kernels with STYLEGAN_CUDA_BUILD_CUDA=0."
)
_lock = threading.RLock()  # one load per process, also when threads ask at once (on-load hooks run once)
_loaded: BuildInfo | None = None
_failure: ExtensionBuildError | None = None
_on_load: list[Callable[[], None]] = []


def on_extension_loaded(fn: Callable[[], None]) -> Callable[[], None]:
    """Register ``fn`` to run once the extension's ops exist (each op module registers its fake and autograd)."""
    _on_load.append(fn)
    if _loaded is not None:
        fn()
    return fn


def source_dir() -> Path:
    for candidate in _SOURCE_DIRS:
        if candidate.is_dir():
            return candidate
    raise ExtensionBuildError(f"the C++/CUDA sources were not found (looked in {', '.join(map(str, _SOURCE_DIRS))})")


def source_files(with_cuda: bool) -> list[str]:
    root = source_dir()
    patterns = ["**/*.cpp"] + (["**/*.cu"] if with_cuda else [])
    return sorted(str(p) for pattern in patterns for p in root.glob(pattern))


def cuda_home() -> str | None:
    """The CUDA toolkit: $CUDA_HOME / $CUDA_PATH, torch's guess when it holds the headers, else /usr/local/cuda."""
    from torch.utils import cpp_extension

    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME, "/usr/local/cuda"):
        if candidate and os.path.isfile(os.path.join(candidate, "include", "cuda_runtime.h")) and os.path.isfile(
            os.path.join(candidate, "bin", "nvcc")
        ):
            return candidate
    return None


def point_torch_at_cuda_home() -> None:
    """Make torch's builder use :func:`cuda_home` (its own guess can be a folder that only holds a wrapper script)."""
    from torch.utils import cpp_extension

    home = cuda_home()
    if home is not None and home != cpp_extension.CUDA_HOME:
        cpp_extension.CUDA_HOME = home


def want_cuda() -> bool:
    setting = os.environ.get("STYLEGAN_CUDA_BUILD_CUDA", "auto").lower()
    if setting not in ("auto", "0", "1"):
        raise ValueError(f"STYLEGAN_CUDA_BUILD_CUDA must be auto, 0 or 1, got {setting!r}")
    if setting == "0":
        return False
    if setting == "1":
        if torch.version.cuda is None:
            raise ExtensionBuildError("STYLEGAN_CUDA_BUILD_CUDA=1 needs a CUDA build of torch; this torch is CPU-only")
        if cuda_home() is None:
            raise ExtensionBuildError("STYLEGAN_CUDA_BUILD_CUDA=1 needs the CUDA toolkit (nvcc); set CUDA_HOME")
        return True
    return torch.version.cuda is not None and cuda_home() is not None and torch.cuda.is_available()


def cuda_archs() -> str:
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{major}.{minor}" for major, minor in caps)
    return DEFAULT_CUDA_ARCHS


def compile_flags(with_cuda: bool, native: bool) -> tuple[list[str], list[str]]:
    """(C++ flags, nvcc flags). ``native`` tunes the CPU code for this machine (JIT only: a wheel must run anywhere).

    ``-fopenmp`` makes ``at::parallel_for`` (an OpenMP loop in ATen's headers) run on torch's threads; without it the
    CPU kernels would run on one thread. Link with :data:`LINK_FLAGS` (the process then shares torch's libgomp).
    ``-ffp-contract=off``: no multiply-add is fused behind the code's back, so the same expression rounds the same way
    wherever the compiler inlines it (adain_noise's ``h - h[0]`` is exactly 0 on a constant plane).
    ``-fno-tree-loop-distribute-patterns``: copy loops stay loops instead of becoming ``memmove`` calls, whose call
    overhead dominated upfirdn2d's short rows (blur at 8x8: 0.17 -> 0.135 ms on 2 cores; no change on large planes).
    ``-fno-trapping-math``: GCC may then compute both sides of a select such as the leaky ReLU's (the values are the
    same; only floating-point exception flags, which nothing reads, may differ). Without it the loops with a select
    vectorize only where AVX-512 can mask them: built for a generic x86-64 (the ahead-of-time build), bias_act and
    adain_noise ran 20x and 45x slower.
    """
    cflags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-tree-loop-distribute-patterns", "-fno-trapping-math"]
    # A build for any x86-64 compiles its hot loops for AVX-512, AVX2 and the baseline (SGC_CPU_CLONES, common.h).
    cflags += ["-march=native"] if native else ["-DSTYLEGAN_CUDA_CPU_CLONES"]
    if with_cuda:
        cflags.append("-DWITH_CUDA")
    nvcc_flags = ["-O3", "-DWITH_CUDA", "--use_fast_math", "-lineinfo"]
    return cflags, nvcc_flags


LINK_FLAGS = ["-fopenmp"]


def _cache_root() -> Path:
    base = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not base:
        tag = f"py{sys.version_info.major}{sys.version_info.minor}_" + (
            f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
        )
        base = os.path.join(os.path.expanduser("~"), ".cache", "torch_extensions", tag)
    return Path(base) / "stylegan_cuda"


def build_key(with_cuda: bool, archs: str, flags: tuple[list[str], list[str]], root: Path | None = None) -> str:
    """The cache folder's name: a hash of every source and header, torch, the flags, the CUDA targets."""
    root = root or source_dir()
    digest = hashlib.sha256()
    for path in sorted(p for pattern in ("**/*.cpp", "**/*.cu", "**/*.h", "**/*.cuh") for p in root.glob(pattern)):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    cpu = torch.backends.cpu.get_cpu_capability()
    for part in (torch.__version__, str(torch.version.cuda), str(with_cuda), archs if with_cuda else "", repr(flags),
                 sys.version, platform.machine(), cpu, _cpu_flags(), _cuda_toolkit() if with_cuda else ""):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def _cpu_flags() -> str:
    """The CPU's instruction-set flags: a cache shared by machines with different CPUs (a home folder on a cluster)
    must not hand one machine a ``-march=native`` library built for another (illegal instruction)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor()


def _cuda_toolkit() -> str:
    """Which CUDA toolkit compiles the kernels: its folder and version file (another nvcc rebuilds)."""
    home = cuda_home()
    if home is None:
        return ""
    try:
        version = Path(home, "version.json").read_text()
    except OSError:
        version = ""
    return os.path.realpath(home) + version


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _library_record(library: Path) -> dict:
    return {"library_size": library.stat().st_size, "library_sha256": _file_sha256(library)}


def _intact_build(folder: Path) -> dict | None:
    """``folder``'s build_info.json if its library is there and unchanged since the build (size and SHA-256), else
    None: an unfinished, truncated or overwritten build, which must be rebuilt, never loaded."""
    try:
        info = json.loads((folder / "build_info.json").read_text())
        library = folder / f"{EXTENSION_NAME}.so"
        if library.stat().st_size != info["library_size"] or _file_sha256(library) != info["library_sha256"]:
            return None
        return info
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as error:
        raise ExtensionBuildError(
            f"the kernel cache folder {path.parent} cannot be written ({error}); point TORCH_EXTENSIONS_DIR at a "
            f"writable folder.\n{FALLBACK_HINT}"
        ) from error
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS if this process dies
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _jit_build(with_cuda: bool, verbose: bool) -> BuildInfo:
    from torch.utils import cpp_extension

    start = time.perf_counter()
    archs = cuda_archs() if with_cuda else ""
    flags = compile_flags(with_cuda, native=True)
    sources = source_files(with_cuda)
    key = build_key(with_cuda, archs, flags)
    root = _cache_root()
    final = root / key
    library = final / f"{EXTENSION_NAME}.so"
    how = "jit-cached"
    # A finished build appears at `final` in one rename and is never changed, so an intact one needs no lock.
    if _intact_build(final) is not None:
        torch.ops.load_library(str(library))
        return BuildInfo(str(library), _has_cuda_kernels(), archs if with_cuda else "", how,
                         time.perf_counter() - start)
    with _file_lock(root / f"{key}.lock"):
        if _intact_build(final) is None:
            how = "jit-built"
            for stale in root.glob(f"{key}.partial-*"):  # left by killed builds (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            partial = root / f"{key}.partial-{os.getpid()}"
            partial.mkdir(parents=True)
            env = {"TORCH_CUDA_ARCH_LIST": archs} if with_cuda else {}
            if with_cuda:
                point_torch_at_cuda_home()
            try:
                with _environ(**env):
                    cpp_extension.load(
                        name=EXTENSION_NAME,
                        sources=sources,
                        extra_cflags=flags[0],
                        extra_cuda_cflags=flags[1],
                        extra_ldflags=LINK_FLAGS,
                        extra_include_paths=[str(source_dir())],
                        build_directory=str(partial),
                        with_cuda=with_cuda,
                        is_python_module=False,
                        verbose=verbose,
                    )
            except Exception as error:  # the compiler's own message is in str(error)
                shutil.rmtree(partial, ignore_errors=True)
                raise ExtensionBuildError(
                    f"building the stylegan_cuda kernels failed:\n{error}\n{FALLBACK_HINT}"
                ) from error
            # load() has loaded the library from `partial`; the mapping survives the rename.
            try:
                record = _library_record(partial / f"{EXTENSION_NAME}.so")
                (partial / "build_info.json").write_text(json.dumps({"with_cuda": with_cuda, "archs": archs, **record}))
                shutil.rmtree(final, ignore_errors=True)  # an unfinished or damaged earlier build
                os.replace(partial, final)
            except OSError:
                shutil.rmtree(partial, ignore_errors=True)
                raise
        else:
            torch.ops.load_library(str(library))
    return BuildInfo(str(library), _has_cuda_kernels(), archs if with_cuda else "", how, time.perf_counter() - start)


def _ahead_of_time_library() -> tuple[str, dict] | None:
    """The library built at install time and its build info, unless it is missing its build info or was built
    against another torch version (its symbols would not resolve): then the kernels are built just in time."""
    found = sorted(glob.glob(str(_PACKAGE_DIR / "_C*.so")))
    if not found:
        return None
    try:
        info = json.loads(Path(found[0]).with_name("_C_build_info.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("torch", torch.__version__) != torch.__version__:
        return None
    return found[0], info


def registered_ops() -> list[str]:
    """The names of the loaded ops, e.g. ``stylegan_cuda::bias_act``."""
    return sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("stylegan_cuda::"))


def _has_cuda_kernels() -> bool:
    ops = registered_ops()
    return bool(ops) and all(torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA") for op in ops)


def load_extension(verbose: bool | None = None) -> BuildInfo:
    """Load the kernels (built ahead of time, cached, or built now). Raises :class:`ExtensionBuildError`.

    A failure is remembered: later calls in this process raise it again without another build attempt.
    """
    with _lock:
        return _load_extension(verbose)


def _load_extension(verbose: bool | None) -> BuildInfo:
    global _loaded, _failure
    if _loaded is not None:
        return _loaded
    if _failure is not None:
        raise _failure
    if verbose is None:
        verbose = os.environ.get("STYLEGAN_CUDA_VERBOSE") == "1"
    try:
        aot = _ahead_of_time_library()
        if aot is not None:
            start = time.perf_counter()
            torch.ops.load_library(aot[0])
            has_cuda = _has_cuda_kernels()
            info = BuildInfo(aot[0], has_cuda, aot[1].get("archs", "") if has_cuda else "", "ahead-of-time",
                             time.perf_counter() - start)
        else:
            info = _jit_build(want_cuda(), verbose)
    except ExtensionBuildError as error:
        _failure = error
        raise
    except Exception as error:
        _failure = ExtensionBuildError(f"loading the stylegan_cuda kernels failed: {error}\n{FALLBACK_HINT}")
        raise _failure from error
    _loaded = info
    for fn in _on_load:
        fn()
    return info
