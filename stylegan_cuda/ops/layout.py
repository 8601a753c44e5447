"""Memory-format and device rules shared by the reference implementations and the fake kernels."""

import torch


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a channels_last 4-D tensor, else ``torch.contiguous_format``."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def check_same_device(ref_name: str, ref: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    """In a fake kernel: every tensor argument on the device of ``ref``, as the real kernels check (a call that mixes
    a meta tensor with real ones reaches the fake kernel, which would otherwise return an uninitialized tensor)."""
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise RuntimeError(f"{name} must be on the same device as {ref_name} ({ref.device}), got {t.device}")
