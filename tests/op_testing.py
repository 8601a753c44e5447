"""What every op's tests share: dtypes, tolerances, and the checks run on each sample input."""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)
DTYPES = (torch.float32, torch.float64) + LOW_PRECISION


def assert_matches_reference(out: torch.Tensor, reference_fn, inputs: tuple, kwargs: dict | None = None) -> None:
    """``out`` (the kernel on ``inputs``) against the reference.

    Full precision: float32/float64 tolerances. Half types (the rule of flash-attention's tests): the kernel's error
    against the reference run in float32 is at most twice the reference's own error in the low precision.
    """
    kwargs = kwargs or {}
    if out.dtype not in LOW_PRECISION:
        torch.testing.assert_close(out, reference_fn(*inputs, **kwargs))
        return
    upcast = tuple(t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs)
    ref32 = reference_fn(*upcast, **kwargs)
    ref_low = reference_fn(*inputs, **kwargs).float()
    allowed = 2 * (ref_low - ref32).abs().max().item() + 1e-3 * ref32.abs().max().item() + 1e-6
    error = (out.float() - ref32).abs().max().item()
    assert error <= allowed, f"{out.dtype} kernel error {error:.3g} > allowed {allowed:.3g}"


def check_forward(run_extension, reference_fn, inputs: tuple, dtype: torch.dtype) -> torch.Tensor:
    """The kernel on ``inputs``: its dtype, its agreement with the reference and its memory format (the reference's
    too: impl="reference" keeps the layout as well)."""
    out = run_extension(*inputs)
    assert out.dtype == dtype
    assert_matches_reference(out, reference_fn, inputs)
    assert_same_layout(out, inputs[0])
    assert_same_layout(reference_fn(*inputs), inputs[0])
    return out


def assert_same_layout(out: torch.Tensor, x: torch.Tensor) -> None:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last), "output lost the channels_last format"
    else:
        assert out.is_contiguous(), "output is not contiguous"


def as_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def assert_cpu_half_is_float32_rounded(run_extension, inputs: tuple) -> None:
    """The CPU kernels compute float16 and bfloat16 in float32 runs (csrc/cpu_convert.h): their output and gradient
    with respect to ``x`` (the first input) must be the float32 kernels' on the same values, rounded, bit for bit.
    (Gradients that the host code reduces from half tensors are not: the parity tests compare those.)"""
    dtype = inputs[0].dtype
    x_half = inputs[0].detach().requires_grad_()
    x32 = x_half.detach().float().requires_grad_()
    rest_half = inputs[1:]
    rest32 = tuple(t.detach().float() if isinstance(t, torch.Tensor) and t.dtype == dtype else t for t in rest_half)
    out_half, out32 = run_extension(x_half, *rest_half), run_extension(x32, *rest32)
    assert torch.equal(out_half, out32.to(dtype)), f"{dtype} forward differs from the float32 kernel's, rounded"
    grad = torch.randn_like(out_half)
    (grad_half,) = torch.autograd.grad(out_half, x_half, grad)
    (grad32,) = torch.autograd.grad(out32, x32, grad.float())
    assert torch.equal(grad_half, grad32.to(dtype)), f"{dtype} gradient of x differs from the float32 kernel's, rounded"
