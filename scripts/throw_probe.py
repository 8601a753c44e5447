"""Does a C++ error raised inside a registered op reach Python, or crash the process? Each case runs in a child.

On the lent H100 image (torch 2.11, Ubuntu g++ 13.3) a bad-argument call straight into ``torch.ops.stylegan_cuda``
ended in a segmentation fault, while the same call raises a RuntimeError on the CI machine; every crash was inside
the redispatch of torch.library's Python autograd wrapper, which the ops then had (their autograd is C++ now). The
cases below tell apart torch itself, this project's extension (also built CPU-only) and a minimal op built with and
without the extension's flags, with a CUDA unit beside it, and with a Python autograd registration; a case that
crashes is run again under cuda-gdb (where the image has it) for a native backtrace.

    python scripts/throw_probe.py          (gpu_check.sh runs it)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

PRELUDE = "import torch\n"
# Marks the line of a case that should raise: what comes before it (building, loading) must not.
CALL_MARK = "# the call\n"

MINIMAL_OP = r"""
#include <torch/library.h>
#include <ATen/ATen.h>
at::Tensor throw_now(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 99, "x must have rank 99, got ", x.dim());
  return x;
}
TORCH_LIBRARY(throw_probe, m) { m.def("throw_now(Tensor x) -> Tensor"); }
TORCH_LIBRARY_IMPL(throw_probe, CPU, m) { m.impl("throw_now", &throw_now); }
"""


# A CUDA translation unit beside the op, as in the extension's CPU + CUDA build (the op itself stays on the CPU).
CUDA_UNIT = "__global__ void throw_probe_noop(float* x) { x[threadIdx.x] = 0; }\n"


def minimal_op_case(cflags: list[str], ldflags: list[str], with_cuda: bool = False,
                    python_autograd: bool = False) -> str:
    build_dir = tempfile.mkdtemp(prefix="throw_probe_")
    cuda = f"cuda_sources=[{CUDA_UNIT!r}], " if with_cuda else ""
    # The ops' autograd was once registered this way; the H100 crashes were all inside its redispatch.
    autograd = "torch.library.register_autograd('throw_probe::throw_now', lambda ctx, grad: grad)\n"
    return (
        "from torch.utils.cpp_extension import load_inline\n"
        f"load_inline('throw_probe', [{MINIMAL_OP!r}], {cuda}extra_cflags={cflags!r}, extra_ldflags={ldflags!r}, "
        f"build_directory={build_dir!r}, is_python_module=False)\n"
        f"{autograd * python_autograd}{CALL_MARK}torch.ops.throw_probe.throw_now(torch.ones(2))\n"
    )


OUR_OP = (
    "from stylegan_cuda.ops.build import load_extension\nload_extension()\n"
    f"{CALL_MARK}torch.ops.stylegan_cuda.bias_act(torch.ones(2, 3), torch.ones(4), 0.2, 1.0)\n"
)
# Variables that change how torch records the C++ stack of an error (its own unwinder, symbolization).
STACK_VARIABLES = ("TORCH_SHOW_CPP_STACKTRACES", "TORCH_SYMBOLIZE_MODE", "TORCH_DISABLE_ADDR2LINE")


def cases() -> dict[str, tuple[str, dict[str, str]]]:
    """name: (code, environment changes)."""
    from stylegan_cuda.ops.build import LINK_FLAGS, compile_flags, cuda_home

    cflags = compile_flags(with_cuda=False, native=True)[0]
    return {
        "torch's own error": (f"{CALL_MARK}torch.ones(2) + torch.ones(3)\n", {}),
        "stylegan_cuda op, bad bias": (OUR_OP, {}),
        "stylegan_cuda op, C++ stacks off": (OUR_OP, {"TORCH_SHOW_CPP_STACKTRACES": "0"}),
        "stylegan_cuda op, C++ stacks on": (OUR_OP, {"TORCH_SHOW_CPP_STACKTRACES": "1"}),
        "stylegan_cuda op, CPU-only build": (OUR_OP, {"STYLEGAN_CUDA_BUILD_CUDA": "0",
                                                      "TORCH_EXTENSIONS_DIR": tempfile.mkdtemp(prefix="throw_probe_")}),
        "minimal op, no extra flags": (minimal_op_case([], []), {}),
        "minimal op, Python autograd": (minimal_op_case([], [], python_autograd=True), {}),
        "minimal op, the extension's flags": (minimal_op_case(cflags, LINK_FLAGS), {}),
        "minimal op, no -march=native": (minimal_op_case([f for f in cflags if f != "-march=native"], LINK_FLAGS), {}),
        "minimal op, no OpenMP": (minimal_op_case([f for f in cflags if f != "-fopenmp"], []), {}),
        "minimal op with a CUDA unit (nvcc)": (minimal_op_case(cflags, LINK_FLAGS, with_cuda=True),
                                               {"TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"),
                                                "CUDA_HOME": cuda_home() or ""}),
    }


def run(code: str, env: dict[str, str], timeout: int = 300) -> tuple[str, str]:
    """(verdict, output) of ``code`` in a child process that catches the RuntimeError its marked call should raise."""
    setup, call = code.split(CALL_MARK)
    body = PRELUDE + setup + "try:\n" + "".join(f"    {line}\n" for line in call.splitlines())
    body += "except RuntimeError as error:\n    print('RuntimeError:', str(error).splitlines()[0])\n"
    try:
        done = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env})
    except subprocess.TimeoutExpired:
        return f"TIMED OUT after {timeout} s", ""
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        return f"CRASHED (exit {done.returncode})", output
    return ("raised" if "RuntimeError:" in output else "did not raise"), output


def backtrace(code: str, env: dict[str, str]) -> str:
    debugger = shutil.which("cuda-gdb") or shutil.which("gdb")
    if debugger is None:
        return "(no cuda-gdb or gdb here)"
    body = PRELUDE + code
    done = subprocess.run(
        [debugger, "-batch", "-ex", "run", "-ex", "bt 40", "--args", sys.executable, "-c", body],
        capture_output=True, text=True, timeout=600, env={**os.environ, **env},
    )
    lines = (done.stdout + done.stderr).splitlines()
    return "\n".join(line for line in lines if line.startswith("#") or "SIG" in line)


def library_facts() -> str:
    """Which runtime libraries the process maps, and whether the extension has an unwind search table."""
    code = (
        "from stylegan_cuda.ops.build import load_extension\n"
        "print(load_extension().library)\n"
        "maps = open('/proc/self/maps').read().split()\n"
        "print(sorted({m for m in maps if 'libgcc_s' in m or 'libstdc++' in m or 'libgomp' in m}))\n"
    )
    done = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True, timeout=600)
    lines = done.stdout.splitlines()
    facts = "\n".join(lines)
    if lines and shutil.which("readelf"):
        header = subprocess.run(["readelf", "-x", ".eh_frame_hdr", lines[0]], capture_output=True, text=True)
        # byte 2 is the FDE count's encoding: 0xff (omitted) means no binary search table, a linear search.
        facts += "\n.eh_frame_hdr: " + " ".join(header.stdout.splitlines()[2:3])
    return facts + done.stderr[-2000:] * (done.returncode != 0)


def main() -> int:
    print(library_facts())
    print("environment:", {name: os.environ.get(name) for name in STACK_VARIABLES})
    crashed, all_raised = [], True
    for name, (code, env) in cases().items():
        verdict, output = run(code, env)
        all_raised = all_raised and verdict == "raised"
        lines = output.splitlines() or [""]
        print(f"{name:40s} {verdict}\n    {next((l for l in lines if 'RuntimeError:' in l), lines[-1])}")
        if verdict.startswith("CRASHED"):
            crashed.append((name, code, env))
    for name, code, env in crashed[:2]:
        print(f"\nbacktrace of '{name}':\n{backtrace(code, env)}")
    return 0 if all_raised else 1


if __name__ == "__main__":
    sys.exit(main())
