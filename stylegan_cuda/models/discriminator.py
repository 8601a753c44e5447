"""The progressive discriminator of the seed (rosinality/style-based-gan-pytorch), on this project's ops."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import blur, downsample_avg_2x
from ..ops.dispatch import check_impl
from .layers import DownsampleConv2d, EqualConv2d, EqualLinear
from .widths import (MAX_STEP, RESOLUTIONS, channels_at, check_alpha, check_input_tensor, check_step, check_widths,
                     fading_in)

# Blocks whose input is at most this resolution downsample by average pooling even when the model is fused.
POOLED_UP_TO_RESOLUTION = 64


def minibatch_stddev(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Append one channel holding the mean over C, H, W of the batch's (biased) standard deviation, as the seed."""
    if x.shape[0] == 0:  # no images, no statistic (var of nothing would warn)
        return torch.cat([x, x[:, :1]], dim=1)
    std = torch.sqrt(x.float().var(0, unbiased=False) + eps).mean().to(x.dtype)
    return torch.cat([x, std.expand(x.shape[0], 1, x.shape[2], x.shape[3])], dim=1)


class DownBlock(nn.Module):
    """The seed's downsampling ``ConvBlock``: conv + leaky ReLU, then blur, a convolution halving the size, leaky ReLU.

    ``fused``: the seed's stride-2 box-filtered convolution; otherwise its 3x3 convolution and 2x2 average pooling,
    the same function (see :class:`DownsampleConv2d`).
    """

    def __init__(self, in_channels: int, out_channels: int, fused: bool, impl: str | None = None):
        super().__init__()
        self.impl = check_impl(impl)
        self.fused = fused
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, padding=1, activate=True, impl=impl)
        self.conv2 = DownsampleConv2d(out_channels, out_channels, pooled=not fused, activate=True, impl=impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(blur(self.conv1(x), impl=self.impl))


class FinalBlock(nn.Module):
    """The 4x4 block: minibatch stddev, a 3x3 conv, a 4x4 conv without padding (to 1x1), each with leaky ReLU."""

    def __init__(self, channels: int, impl: str | None = None):
        super().__init__()
        self.conv1 = EqualConv2d(channels + 1, channels, 3, padding=1, activate=True, impl=impl)
        self.conv2 = EqualConv2d(channels, channels, RESOLUTIONS[0], padding=0, activate=True, impl=impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(minibatch_stddev(x)))


class Discriminator(nn.Module):
    """The seed's ``Discriminator(fused, from_rgb_activate)``: scores ``[N, 1]`` for images at ``4 * 2**step`` px.

    Block ``p`` takes ``1024 / 2**p`` px (``p = 8`` is the final 4x4 block); from-RGB ``p`` is a 1x1 conv to that
    block's width, followed by leaky ReLU when ``from_rgb_activate`` (the seed's train.py). ``fused`` downsamples
    the blocks from 128 px up with the stride-2 convolution. Widths: ``min(max_channels, channel_base // resolution)``.
    ``impl`` picks every op's implementation (``None``: ``STYLEGAN_CUDA_IMPL``, else ``auto``).
    """

    def __init__(self, fused: bool = True, from_rgb_activate: bool = True, channel_base: int = 16384,
                 max_channels: int = 512, impl: str | None = None):
        super().__init__()
        check_widths(channel_base, max_channels)
        self.config = dict(fused=fused, from_rgb_activate=from_rgb_activate, channel_base=channel_base,
                           max_channels=max_channels)
        self.impl = check_impl(impl)
        inputs = RESOLUTIONS[::-1]  # the input resolution of block p
        widths = [channels_at(r, channel_base, max_channels) for r in inputs]
        self.blocks = nn.ModuleList(
            DownBlock(widths[p], widths[p + 1], fused and inputs[p] > POOLED_UP_TO_RESOLUTION, impl)
            for p in range(MAX_STEP)
        )
        self.blocks.append(FinalBlock(widths[MAX_STEP], impl))
        self.from_rgb = nn.ModuleList(EqualConv2d(3, w, 1, activate=from_rgb_activate, impl=impl) for w in widths)
        self.linear = EqualLinear(widths[MAX_STEP], 1, impl=impl)

    def forward(self, input: torch.Tensor, step: int = 0, alpha: float = -1) -> torch.Tensor:
        step, alpha = check_step(step), check_alpha(alpha)
        check_input_tensor("input", input, self)
        size = RESOLUTIONS[step]
        if input.dim() != 4 or input.shape[1] != 3 or tuple(input.shape[2:]) != (size, size):
            raise ValueError(f"step {step} takes images [N, 3, {size}, {size}], got {list(input.shape)}")
        top = MAX_STEP - step
        out = self.blocks[top](self.from_rgb[top](input))
        if fading_in(step, alpha):
            skip = self.from_rgb[top + 1](downsample_avg_2x(input, impl=self.impl))
            out = (1 - alpha) * skip + alpha * out
        for block in self.blocks[top + 1:]:
            out = block(out)
        return self.linear(out.flatten(1))
