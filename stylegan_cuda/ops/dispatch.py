"""Which implementation an op runs: ``impl="auto" | "extension" | "reference"``.

``STYLEGAN_CUDA_IMPL`` sets the default of ``impl=None`` for a whole run (``auto`` when unset).
- ``reference``: the pure-PyTorch implementation beside each op, always available; it is the op's specification.
- ``extension``: the compiled kernels; an error with the compiler's message if they cannot be built.
- ``auto``: the kernels when they build (and, for CUDA tensors, hold CUDA kernels); otherwise the reference, with
  one warning per process.
"""

from __future__ import annotations

import os
import warnings

import torch

from . import build

IMPLS = ("auto", "extension", "reference")
# The help of a command line's --impl, whose default (None) is the run's.
IMPL_HELP = ("ops: compiled kernels (extension), the pure-PyTorch reference, or auto: the kernels where they build "
             "(default: $STYLEGAN_CUDA_IMPL, else auto)")
_warned: set[str] = set()


def default_impl() -> str:
    impl = os.environ.get("STYLEGAN_CUDA_IMPL", "auto")
    if impl not in IMPLS:
        raise ValueError(f"STYLEGAN_CUDA_IMPL must be one of {', '.join(IMPLS)}, got {impl!r}")
    return impl


def check_impl(impl: str | None) -> str:
    """``impl`` itself, or the run's default for ``None``; a clear error for anything else."""
    if impl is None:
        return default_impl()
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)} (or None for STYLEGAN_CUDA_IMPL), got {impl!r}")
    return impl


def _warn_once(reason: str, message: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# Runs eagerly even under torch.compile, whose graph then holds the answer as a constant.
@torch.compiler.assume_constant_result
def use_extension(impl: str | None, device_type: str) -> bool:
    """Whether an op called with ``impl`` on a tensor of ``device_type`` runs the compiled kernel."""
    impl = check_impl(impl)
    if impl == "reference" or device_type not in ("cpu", "cuda"):
        if impl == "extension":
            raise ValueError(f"impl='extension' has kernels for CPU and CUDA tensors only, got a {device_type} tensor")
        return False
    try:
        info = build.load_extension()
    except build.ExtensionBuildError as error:
        if impl == "extension":
            raise
        _warn_once("build", f"stylegan_cuda: the kernels could not be built, using the pure-PyTorch reference ops.\n{error}")
        return False
    if device_type == "cuda" and not info.has_cuda:
        message = (
            "stylegan_cuda was built without CUDA kernels (no nvcc or no CUDA build of torch was found at build time: "
            f"{info.library})"
        )
        if impl == "extension":
            raise build.ExtensionBuildError(message + "; use impl='reference' or rebuild with STYLEGAN_CUDA_BUILD_CUDA=1")
        _warn_once("cuda", message + "; using the pure-PyTorch reference ops for CUDA tensors.")
        return False
    return True
