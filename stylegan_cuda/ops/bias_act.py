"""Fused bias + scaled leaky ReLU."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .build import on_extension_loaded
from .dispatch import use_extension
from .layout import check_same_device

DEFAULT_GAIN = math.sqrt(2.0)


def _check_args(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float, scale: float) -> None:
    if x.dim() < 2:
        raise ValueError(f"x must have rank 2 or more ([N, C, ...]), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}")
    if bias is not None:
        if bias.shape != (x.shape[1],):
            raise ValueError(f"bias must have shape [{x.shape[1]}] (the length of x.shape[1]), got {tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"bias must be on the device of x ({x.device}), got {bias.device}")
        if bias.dtype != x.dtype:
            raise TypeError(f"bias must have the dtype of x ({x.dtype}), got {bias.dtype}")
    if negative_slope < 0:
        raise ValueError(f"negative_slope must be >= 0, got {negative_slope}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")


def fused_bias_leaky_relu_reference(
    x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2, scale: float = DEFAULT_GAIN
) -> torch.Tensor:
    """The specification of :func:`fused_bias_leaky_relu`, in plain PyTorch."""
    _check_args(x, bias, negative_slope, scale)
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.dim() - 2)))
    return F.leaky_relu(x, negative_slope) * scale


def fused_bias_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    negative_slope: float = 0.2,
    scale: float = DEFAULT_GAIN,
    impl: str | None = None,
) -> torch.Tensor:
    """``y = scale * leaky_relu(x + bias, negative_slope)``, the bias broadcast along dimension 1.

    Args:
        x: ``[N, C]`` or ``[N, C, H, W]`` (any rank >= 2), float16 / bfloat16 / float32 / float64, contiguous or
            channels_last; the output keeps its memory format. Half types are computed in float32.
        bias: ``[C]`` of the dtype and device of ``x``, or ``None``.
        negative_slope: slope for negative inputs, >= 0 (the seed's ``LeakyReLU(0.2)``).
        scale: gain > 0 applied after the activation: ``sqrt(2)`` keeps the variance of equalized-LR layers; the
            seed's plain ``LeakyReLU`` is ``scale=1``.
        impl: ``"auto"``, ``"extension"``, ``"reference"``, or ``None`` for ``STYLEGAN_CUDA_IMPL``.

    Gradients flow to ``x`` and ``bias`` to any order the penalties need: the backward pass is
    ``grad * scale * (1 if x + bias > 0 else negative_slope)``, itself a registered op whose derivative in ``grad`` is
    the same op. Forward saves one bit per element (where ``x + bias > 0``), not ``y``.
    """
    if not use_extension(impl, x.device.type):
        return fused_bias_leaky_relu_reference(x, bias, negative_slope, scale)
    _check_args(x, bias, negative_slope, scale)
    return torch.ops.stylegan_cuda.bias_act(x, bias, float(negative_slope), float(scale))[0]


class FusedLeakyReLU(nn.Module):
    """A learned per-channel bias followed by the scaled leaky ReLU, as one op."""

    def __init__(
        self,
        channels: int,
        bias: bool = True,
        negative_slope: float = 0.2,
        scale: float = DEFAULT_GAIN,
        impl: str | None = None,
    ):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_bias_leaky_relu(x, self.bias, self.negative_slope, self.scale, self.impl)

    def extra_repr(self) -> str:
        return f"channels={self.bias.numel() if self.bias is not None else None}, negative_slope={self.negative_slope}, scale={self.scale:.4g}"


@on_extension_loaded
def _register() -> None:
    @torch.library.register_fake("stylegan_cuda::bias_act")
    def _(x, bias, negative_slope, scale):
        check_same_device("x", x, bias=bias)
        return torch.empty_like(x), x.new_empty(((x.numel() + 31) // 32,), dtype=torch.int32)

    @torch.library.register_fake("stylegan_cuda::bias_act_backward")
    def _(grad, positive, y_strides, negative_slope, scale, bias_grad):
        check_same_device("grad", grad, positive=positive)
        return grad.new_empty_strided(grad.shape, y_strides), grad.new_empty((grad.shape[1],) if bias_grad else (0,))
