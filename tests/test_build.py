"""The build: JIT cache, concurrent builds, failures and the impl switch, and the CUDA compile test."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from stylegan_cuda.ops import build, dispatch

REPO = Path(__file__).resolve().parent.parent
_AHEAD_OF_TIME_LIBRARY = build._ahead_of_time_library


def run_python(code: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def test_import_is_cheap_and_builds_nothing(tmp_path):
    result = run_python(
        """
        import sys
        import stylegan_cuda, stylegan_cuda.ops
        assert "torch.utils.cpp_extension" not in sys.modules
        """,
        env={"TORCH_EXTENSIONS_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert not any(tmp_path.iterdir()), "importing the package built something"


def test_build_key_follows_sources_torch_and_targets(tmp_path):
    shutil.copytree(build.source_dir(), tmp_path / "csrc")
    flags = build.compile_flags(False, native=True)
    key = build.build_key(False, "", flags, root=tmp_path / "csrc")
    assert build.build_key(False, "", flags, root=tmp_path / "csrc") == key
    assert build.build_key(True, "9.0", flags, root=tmp_path / "csrc") != key
    assert build.build_key(True, "9.0", flags, root=tmp_path / "csrc") != build.build_key(True, "8.0", flags,
                                                                                        root=tmp_path / "csrc")
    (tmp_path / "csrc" / "common.h").write_text((tmp_path / "csrc" / "common.h").read_text() + "\n// changed\n")
    assert build.build_key(False, "", flags, root=tmp_path / "csrc") != key


def test_concurrent_processes_build_once_despite_a_killed_build(tmp_path):
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path), "STYLEGAN_CUDA_BUILD_CUDA": "0"}
    code = "from stylegan_cuda.ops import build; print('HOW', build.load_extension().how)"
    # A build killed half-way leaves its lock file and a partial folder behind.
    killed = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env})
    try:
        killed.wait(timeout=4)
    except subprocess.TimeoutExpired:
        killed.kill()
        killed.wait()
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    hows = sorted(out.split("HOW ")[1].strip() for out, _ in outputs)
    assert hows.count("jit-built") <= 1 and hows.count("jit-cached") >= 2, hows
    folders = [p for p in (tmp_path / "stylegan_cuda").iterdir() if p.is_dir()]
    assert len(folders) == 1 and ".partial" not in folders[0].name, folders


BROKEN_BUILD = """
    import warnings
    from pathlib import Path
    import torch
    from torch.utils import cpp_extension
    from stylegan_cuda.ops import build
    import stylegan_cuda.ops as ops

    broken = Path({tmp!r}) / "csrc"
    broken.mkdir()
    (broken / "broken.cpp").write_text("this is not C++;")
    build._SOURCE_DIRS = (broken,)
    attempts = []
    real_load = cpp_extension.load
    cpp_extension.load = lambda *a, **k: attempts.append(1) or real_load(*a, **k)
"""


def test_auto_falls_back_to_reference_with_one_warning(tmp_path):
    result = run_python(
        BROKEN_BUILD.format(tmp=str(tmp_path))
        + """
    x = torch.randn(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            torch.testing.assert_close(ops.fused_bias_leaky_relu(x, impl="auto"), ops.fused_bias_leaky_relu_reference(x))
    assert len(caught) == 1 and "could not be built" in str(caught[0].message), [str(w.message) for w in caught]
    assert len(attempts) == 1, attempts
    try:
        ops.fused_bias_leaky_relu(x, impl="extension")
    except build.ExtensionBuildError as error:
        message = str(error)
    assert "broken.cpp" in message and "impl='reference'" in message, message
    assert len(attempts) == 1, attempts
    print("OK")
    """,
        env={"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")},
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr


def test_environment_selects_the_implementation(tmp_path):
    result = run_python(
        BROKEN_BUILD.format(tmp=str(tmp_path))
        + """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops.fused_bias_leaky_relu(torch.randn(2, 3))
        from stylegan_cuda.models import Discriminator, StyledGenerator  # the models' default follows it too
        widths = dict(channel_base=1024, max_channels=8)
        Discriminator(**widths)(StyledGenerator(code_dim=8, n_mlp=1, **widths)(torch.randn(2, 8), step=1), step=1)
    assert attempts == [], "STYLEGAN_CUDA_IMPL=reference still tried to build"
    print("OK")
    """,
        env={"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "STYLEGAN_CUDA_IMPL": "reference"},
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr
    bad = run_python("import torch, stylegan_cuda.ops as ops; ops.fused_bias_leaky_relu(torch.ones(2, 2))",
                     env={"STYLEGAN_CUDA_IMPL": "fastest"})
    assert bad.returncode != 0 and "STYLEGAN_CUDA_IMPL must be one of" in bad.stderr


def test_loaded_extension_registers_every_op_on_cpu():
    info = build.load_extension()
    ops = build.registered_ops()
    for name in ("bias_act", "upfirdn2d", "adain_noise"):
        assert f"stylegan_cuda::{name}" in ops, ops
    for op in ops:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU"), op
    assert info.has_cuda == (torch.cuda.is_available() and build.want_cuda())


def test_without_the_environment_variable_the_kernels_run_where_they_build(monkeypatch):
    """STYLEGAN_CUDA_IMPL unset: impl=None is auto, which runs the compiled kernels where they build (the CPU here)."""
    monkeypatch.delenv("STYLEGAN_CUDA_IMPL", raising=False)
    build.load_extension()
    assert dispatch.check_impl(None) == "auto" and dispatch.use_extension(None, "cpu")


needs_nvcc = pytest.mark.skipif(
    torch.version.cuda is None or build.cuda_home() is None, reason="needs nvcc and a CUDA build of torch"
)


@needs_nvcc
def test_cuda_kernels_compile_without_a_gpu(tmp_path):
    """Compiles every CUDA kernel with nvcc for the default targets and loads it, GPU or not."""
    result = run_python(
        """
        from stylegan_cuda.ops import build
        info = build.load_extension()
        assert info.has_cuda, info
        print(info.describe())
        for op in build.registered_ops():
            print(op)
        """,
        env={"TORCH_EXTENSIONS_DIR": str(tmp_path), "STYLEGAN_CUDA_BUILD_CUDA": "1", "TORCH_CUDA_ARCH_LIST": ""},
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CPU + CUDA (" in result.stdout, result.stdout


def test_ahead_of_time_build_agrees_with_the_reference(tmp_path):
    """``STYLEGAN_CUDA_AOT=1``: the CPU kernels built for any x86-64 (hot loops cloned per instruction set, the best
    one picked at load) load from the built package and pass the ops' parity tests there."""
    env = {**os.environ, "STYLEGAN_CUDA_AOT": "1", "STYLEGAN_CUDA_BUILD_CUDA": "0"}
    built = subprocess.run([sys.executable, "setup.py", "-q", "build", "--build-base", str(tmp_path / "build")],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (lib,) = (tmp_path / "build").glob("lib*")
    # Run from tmp_path so that nothing but the built package is importable as stylegan_cuda; no GPU in sight (the
    # package holds CPU kernels only).
    env = {**os.environ, "PYTHONPATH": str(lib), "CUDA_VISIBLE_DEVICES": ""}
    loaded = subprocess.run([sys.executable, "-c", "import stylegan_cuda.ops as ops; print(ops.load_extension().how, "
                             "ops.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert loaded.stdout.split() == ["ahead-of-time", str(lib / "stylegan_cuda" / "ops" / "__init__.py")], \
        loaded.stdout + loaded.stderr
    tests = [str(REPO / "tests" / f"test_{op}.py") for op in ("bias_act", "upfirdn2d", "adain")]
    parity = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(REPO / "pytest.ini"),
         "--rootdir", str(REPO), "-o", f"pythonpath={REPO / 'tests'}", "-k", "matches_reference or float32_rounded",
         *tests], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert parity.returncode == 0, parity.stdout[-3000:] + parity.stderr[-3000:]
    assert " passed" in parity.stdout


def test_installed_package_ships_the_sources_and_the_command_line_tools(tmp_path):
    """``pip install .`` compiles nothing: the kernels' sources go inside the package (built just in time on first
    use), and the tools come as commands."""
    if not (importlib.util.find_spec("setuptools.command.bdist_wheel") or importlib.util.find_spec("wheel")):
        pytest.skip("no offline wheel build here (setuptools < 70.1 without the wheel package): pip would fetch them")
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                                "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "STYLEGAN_CUDA_AOT": "0"})
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert not list((target / "stylegan_cuda").glob("_C*.so"))
    assert (target / "stylegan_cuda" / "_csrc" / "bias_act" / "bias_act.cpp").is_file()
    for tool in ("prepare", "demo-images", "train", "generate", "convert", "build"):
        result = subprocess.run([sys.executable, str(target / "bin" / f"stylegan-{tool}"), "--help"], cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and result.stdout.startswith("usage:"), (tool, result.stderr[-2000:])


# Unit tests of the cache, lock and load logic: the compiler is faked, so each runs in well under a second.


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    """TORCH_EXTENSIONS_DIR in tmp_path, a fixed cache key, and a `cpp_extension.load` that writes a small "library"
    (records each build); loading a library records its path instead of dlopen-ing it."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setattr(build, "build_key", lambda *args, **kwargs: "k")
    builds, loads = [], []

    def load(name, build_directory, **kwargs):
        builds.append(build_directory)
        Path(build_directory, f"{name}.so").write_bytes(b"\x7fELF" + bytes(range(256)) * 64)

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(torch.ops, "load_library", loads.append)
    monkeypatch.setattr(build, "_has_cuda_kernels", lambda: False)
    return tmp_path / "ext" / "stylegan_cuda" / "k", builds, loads


def test_damaged_cached_library_is_rebuilt_not_loaded(fake_compiler):
    """dlopen of a truncated cached library crashed the process (SIGBUS); it must be rebuilt instead."""
    final, builds, loads = fake_compiler
    assert build._jit_build(False, False).how == "jit-built"
    assert build._jit_build(False, False).how == "jit-cached" and len(builds) == 1
    library = final / f"{build.EXTENSION_NAME}.so"
    with open(library, "r+b") as handle:
        handle.truncate(100)
    assert build._jit_build(False, False).how == "jit-built" and len(builds) == 2
    assert library.stat().st_size > 100
    library.write_bytes(library.read_bytes()[::-1])  # same size, other bytes
    assert build._jit_build(False, False).how == "jit-built" and len(builds) == 3
    assert loads[-1] == str(library)
    assert [p.name for p in final.parent.iterdir() if p.is_dir()] == ["k"]


def test_a_killed_builds_partial_folder_is_removed_by_the_next_build(fake_compiler):
    final, builds, _ = fake_compiler
    stale = final.parent / "k.partial-999999"
    stale.mkdir(parents=True)
    (stale / "half.o").write_bytes(b"half")
    assert build._jit_build(False, False).how == "jit-built"
    assert sorted(p.name for p in final.parent.iterdir() if p.is_dir()) == ["k"]


def test_intact_cache_loads_without_the_lock(fake_compiler, monkeypatch):
    """A finished cache on a read-only file system (the lock file cannot be created) still loads."""
    final, builds, loads = fake_compiler
    build._jit_build(False, False)

    def no_lock(path):
        raise AssertionError("took the lock for an intact cached build")

    monkeypatch.setattr(build, "_file_lock", no_lock)
    info = build._jit_build(False, False)
    assert info.how == "jit-cached" and loads[-1] == info.library and len(builds) == 1


def test_a_build_waiting_on_the_lock_loads_the_other_ones_library(fake_compiler, monkeypatch):
    """Two builds of one key at once (distributed ranks): the second waits on the lock, then loads what the first
    built instead of compiling again. (flock also excludes two opens of one file in one process, so threads stand
    in for the processes.)"""
    import fcntl
    import threading

    from torch.utils import cpp_extension

    final, builds, loads = fake_compiler
    compiling, waiting, finish = threading.Event(), threading.Event(), threading.Event()
    fake_load, real_flock = cpp_extension.load, fcntl.flock

    def slow_load(*args, **kwargs):
        compiling.set()
        finish.wait(timeout=60)
        fake_load(*args, **kwargs)

    def flock(handle, operation):
        if operation == fcntl.LOCK_EX and compiling.is_set():
            waiting.set()
        real_flock(handle, operation)

    monkeypatch.setattr(cpp_extension, "load", slow_load)
    monkeypatch.setattr(fcntl, "flock", flock)
    results = {}

    def run(name):
        results[name] = build._jit_build(False, False)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert compiling.wait(timeout=60)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    assert waiting.wait(timeout=60)
    finish.set()
    for thread in (first, second):
        thread.join(timeout=60)
    assert results["first"].how == "jit-built" and results["second"].how == "jit-cached", results
    assert len(builds) == 1 and loads == [str(final / f"{build.EXTENSION_NAME}.so")]


@pytest.fixture
def fresh_loader(monkeypatch):
    """load_extension as in a new process (nothing loaded, no failure remembered, no hooks, no AOT library)."""
    monkeypatch.setattr(build, "_loaded", None)
    monkeypatch.setattr(build, "_failure", None)
    monkeypatch.setattr(build, "_on_load", [])
    monkeypatch.setattr(build, "_ahead_of_time_library", lambda: None)
    monkeypatch.setattr(build, "want_cuda", lambda: False)


def test_unwritable_cache_folder_says_so_and_how_to_fall_back(tmp_path, monkeypatch, fresh_loader):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "file" / "ext"))
    with pytest.raises(build.ExtensionBuildError) as caught:
        build.load_extension()
    message = str(caught.value)
    assert "TORCH_EXTENSIONS_DIR" in message and "impl='reference'" in message, message


def test_threads_asking_at_once_load_once(monkeypatch, fresh_loader):
    import threading
    import time

    builds, hooks = [], []

    def slow_build(with_cuda, verbose):
        builds.append(1)
        time.sleep(0.2)
        return build.BuildInfo("lib.so", False, "", "jit-built", 0.2)

    monkeypatch.setattr(build, "_jit_build", slow_build)
    build.on_extension_loaded(lambda: hooks.append(1))
    threads = [threading.Thread(target=build.load_extension) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(hooks) == 1, (builds, hooks)


def test_ahead_of_time_library_of_another_torch_is_not_loaded(tmp_path, monkeypatch, fresh_loader):
    """After a torch upgrade the installed library's symbols no longer resolve: build just in time instead."""
    import json

    monkeypatch.setattr(build, "_ahead_of_time_library", _AHEAD_OF_TIME_LIBRARY)
    monkeypatch.setattr(build, "_PACKAGE_DIR", tmp_path)
    (tmp_path / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"not a library")
    info_file = tmp_path / "_C_build_info.json"
    info_file.write_text(json.dumps({"with_cuda": False, "archs": "", "torch": "0.0.1"}))
    monkeypatch.setattr(build, "_jit_build", lambda with_cuda, verbose: build.BuildInfo("jit.so", False, "",
                                                                                        "jit-built", 0.0))
    assert build.load_extension().how == "jit-built"
    info_file.write_text(json.dumps({"with_cuda": False, "archs": "", "torch": torch.__version__}))
    assert build._ahead_of_time_library()[0] == str(tmp_path / "_C.cpython-311-x86_64-linux-gnu.so")


def test_build_key_follows_the_cpu_and_the_cuda_toolkit(monkeypatch):
    """The CPU code is built with -march=native: a cache shared by different CPUs needs one build per CPU."""
    flags = build.compile_flags(True, native=True)
    key = build.build_key(True, "9.0", flags)
    monkeypatch.setattr(build, "_cpu_flags", lambda: "sse2")
    assert build.build_key(True, "9.0", flags) != key
    key = build.build_key(True, "9.0", flags)
    monkeypatch.setattr(build, "_cuda_toolkit", lambda: "/opt/cuda-99")
    assert build.build_key(True, "9.0", flags) != key
    assert build.build_key(False, "", build.compile_flags(False, native=True)) == build.build_key(
        False, "", build.compile_flags(False, native=True))


def test_build_key_follows_torch_and_python(monkeypatch):
    """A library built against one torch (or Python) must not be loaded by another: its ABI may differ."""
    flags = build.compile_flags(False, native=True)
    key = build.build_key(False, "", flags)
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".other")
    assert build.build_key(False, "", flags) != key
    key = build.build_key(False, "", flags)
    monkeypatch.setattr(sys, "version", sys.version + " other")
    assert build.build_key(False, "", flags) != key


def test_ahead_of_time_option_without_torch_explains_no_build_isolation(tmp_path):
    """pip's build isolation hides torch from setup.py: say what to do instead of a bare ModuleNotFoundError."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('No module named torch (isolated build)')")
    result = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path), "STYLEGAN_CUDA_AOT": "1"}, timeout=120)
    assert result.returncode != 0 and "--no-build-isolation" in result.stderr, result.stdout + result.stderr
