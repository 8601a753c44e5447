"""The build: JIT cache, concurrent builds, failures and the impl switch, and the CUDA compile test."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from stylegan_cuda.ops import build

REPO = Path(__file__).resolve().parent.parent


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
