"""Equalized-learning-rate layers of the seed's StyleGAN, composed from this project's ops.

Every weight is stored N(0, 1) and scaled at run time by ``sqrt(2 / fan_in)`` (the seed's ``EqualLR``); biases start
at zero. A layer built with ``activate=True`` is followed by the seed's plain ``LeakyReLU(0.2)`` (no gain): the
convolution runs without its bias and :func:`fused_bias_leaky_relu` adds the bias and applies the activation in one
pass, the same function as the seed's convolution-with-bias followed by the activation. The resampling layers
(:class:`StridedConv3x3` and its subclasses) run their 3x3 kernel at stride 2, widened to 4x4; except with
``impl="reference"``, that includes the seed's nearest upsampling before a convolution and average pooling after one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import downsample_avg_2x, fused_bias_leaky_relu, upsample_nearest_2x
from ..ops.dispatch import check_impl

LEAKY_SLOPE = 0.2
# The seed's nn.LeakyReLU has no gain.
LEAKY_GAIN = 1.0


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalize each latent to unit mean square over dimension 1 (the seed's ``PixelNorm``)."""
    return x / torch.sqrt(torch.mean(x * x, dim=1, keepdim=True) + eps)


class EqualizedLayer(nn.Module):
    """Holds ``weight`` (N(0, 1)), ``bias`` (zeros) and the run-time gain ``sqrt(2 / fan_in)``.

    Subclasses define :meth:`transform`, the linear map without (or with) the bias.
    """

    def __init__(self, weight_shape: tuple[int, ...], out_channels: int, fan_in: int, activate: bool = False,
                 impl: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(weight_shape))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.gain = math.sqrt(2 / fan_in)
        self.activate = activate
        self.impl = check_impl(impl)

    def scaled_weight(self) -> torch.Tensor:
        return self.weight * self.gain

    def transform(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def add_bias(self, y: torch.Tensor) -> torch.Tensor:
        """``y + bias``, then the leaky ReLU when the layer activates (one fused op)."""
        bias = self.bias.to(y.dtype)
        if self.activate:
            return fused_bias_leaky_relu(y, bias, LEAKY_SLOPE, LEAKY_GAIN, impl=self.impl)
        return y + bias.view(1, -1, *([1] * (y.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return self.add_bias(self.transform(x))
        return self.transform(x, self.bias)


class EqualLinear(EqualizedLayer):
    """``x @ W.T + b`` with ``W`` ``[out_dim, in_dim]``."""

    def __init__(self, in_dim: int, out_dim: int, activate: bool = False, impl: str | None = None):
        super().__init__((out_dim, in_dim), out_dim, in_dim, activate, impl)

    def transform(self, x, bias=None):
        return F.linear(x, self.scaled_weight(), bias)


class EqualConv2d(EqualizedLayer):
    """A stride-1 convolution, ``weight`` ``[out, in, k, k]``, zero padding ``padding``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 activate: bool = False, impl: str | None = None):
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        super().__init__(shape, out_channels, in_channels * kernel_size**2, activate, impl)
        self.padding = padding

    def transform(self, x, bias=None):
        return F.conv2d(x, self.scaled_weight(), bias, padding=self.padding)


class StridedConv3x3(EqualizedLayer):
    """A layer whose 3x3 kernel runs at stride 2 widened to 4x4: the sum of the kernel's four copies shifted by zero
    or one pixel in x and y (with ``flip``, of the kernel flipped). ``weight`` is ``[a, b, 3, 3]``.
    """

    def __init__(self, weight_shape: tuple[int, int, int, int], out_channels: int, fan_in: int, activate: bool,
                 impl: str | None, flip: bool = False):
        super().__init__(weight_shape, out_channels, fan_in, activate, impl)
        self.flip = flip

    def widened_weight(self) -> torch.Tensor:
        """The scaled weight widened, ``[a, b, 4, 4]``: one small matrix product."""
        weight = self.scaled_weight()
        # Tap k of the 4-tap kernel sums taps k - 1 and k of the 3-tap one (those that exist). Made on the weight's
        # device at each call (a few microseconds), not held in a buffer that meta-device initialization would leave
        # unset.
        taps = torch.ones(4, 3, device=weight.device, dtype=weight.dtype).tril().triu(-1)
        if self.flip:
            taps = taps.flip(0)
        return (weight.reshape(-1, 9) @ torch.kron(taps, taps).T).view(*weight.shape[:2], 4, 4)


class FusedUpsample(StridedConv3x3):
    """The seed's ``FusedUpsample``: a stride-2 transposed convolution with the 4x4 box filter of the 3x3 kernel (the
    mean of its four shifted copies).

    ``weight`` is ``[in, out, 3, 3]`` (the transposed-convolution layout); ``H x W`` in, ``2H x 2W`` out.
    """

    def __init__(self, in_channels: int, out_channels: int, impl: str | None = None):
        super().__init__((in_channels, out_channels, 3, 3), out_channels, in_channels * 9, False, impl)

    def transform(self, x, bias=None):
        return F.conv_transpose2d(x, self.widened_weight() / 4, bias, stride=2, padding=1)


class UpsampleConv2d(StridedConv3x3):
    """Nearest 2x upsampling, then a 3x3 convolution with zero padding 1: the seed's ``Upsample`` + ``EqualConv2d``.

    ``weight`` is ``[out, in, 3, 3]``; ``H x W`` in, ``2H x 2W`` out. Except with ``impl="reference"`` (the seed's two
    steps) it runs as the one stride-2 transposed convolution that equals them: along each axis an output's three taps
    over the upsampled image fall on two input pixels, so the transposed kernel is the flipped kernel widened. That is
    4 multiply-adds per output and input channel instead of 9, and no upsampled image in memory.
    """

    def __init__(self, in_channels: int, out_channels: int, impl: str | None = None):
        super().__init__((out_channels, in_channels, 3, 3), out_channels, in_channels * 9, False, impl, flip=True)

    def transform(self, x, bias=None):
        if self.impl == "reference":
            return F.conv2d(upsample_nearest_2x(x, impl="reference"), self.scaled_weight(), bias, padding=1)
        return F.conv_transpose2d(x, self.widened_weight().transpose(0, 1), bias, stride=2, padding=1)


class DownsampleConv2d(StridedConv3x3):
    """A 3x3 convolution with zero padding 1 that halves the size: a stride-2 convolution with the 4x4 box filter of
    the kernel (the seed's ``FusedDownsample``).

    That is also the seed's non-fused downsampling, ``EqualConv2d`` then ``AvgPool2d(2)``, from the same weights: a
    2x2 average of 3x3 windows is one 4x4 window weighted by the mean of the kernel's four shifted copies. ``pooled``
    layers with ``impl="reference"`` take the seed's two steps; the rest the stride-2 convolution (4 multiply-adds per
    input pixel and channel instead of 9). ``weight`` is ``[out, in, 3, 3]``; ``H x W`` in, ``H/2 x W/2`` out.
    """

    def __init__(self, in_channels: int, out_channels: int, pooled: bool, activate: bool = False,
                 impl: str | None = None):
        super().__init__((out_channels, in_channels, 3, 3), out_channels, in_channels * 9, activate, impl)
        self.pooled = pooled

    def transform(self, x, bias=None):
        if self.pooled and self.impl == "reference":
            return downsample_avg_2x(F.conv2d(x, self.scaled_weight(), bias, padding=1), impl="reference")
        return F.conv2d(x, self.widened_weight() / 4, bias, stride=2, padding=1)


def set_impl(model: nn.Module, impl: str | None) -> nn.Module:
    """Switch every op of ``model`` to ``impl`` (``"auto"``, ``"extension"``, ``"reference"``); returns ``model``."""
    impl = check_impl(impl)
    for module in model.modules():
        if hasattr(module, "impl"):
            module.impl = impl
    return model


def weights_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``model`` is finite (one device sync)."""
    tensors = [t.detach() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all())
