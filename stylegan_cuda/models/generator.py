"""The style-based generator of the seed (rosinality/style-based-gan-pytorch), on this project's ops."""

from __future__ import annotations

import math
import numbers
import random
from typing import Sequence

import torch
from torch import nn

from ..ops import NoiseAdaIN, blur, upsample_nearest_2x
from ..ops.dispatch import check_impl
from .layers import EqualConv2d, EqualLinear, FusedUpsample, UpsampleConv2d, pixel_norm
from .widths import (MAX_STEP, RESOLUTIONS, channels_at, check_alpha, check_input_tensor, check_step, check_widths,
                     fading_in)

# Blocks from this resolution up upsample with the transposed convolution when the generator is built fused.
FUSED_FROM_RESOLUTION = 128


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, then ``n_mlp`` equalized linear layers each followed by leaky ReLU (0.2, no gain)."""

    def __init__(self, code_dim: int, n_mlp: int, impl: str | None = None):
        super().__init__()
        self.layers = nn.ModuleList(EqualLinear(code_dim, code_dim, activate=True, impl=impl) for _ in range(n_mlp))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = pixel_norm(z)
        for layer in self.layers:
            w = layer(w)
        return w


class StyledBlock(nn.Module):
    """One resolution: (constant | upsample + conv + blur), AdaIN-with-noise, conv, AdaIN-with-noise.

    ``upsample`` is ``None`` for the 4x4 block (a learned constant), ``"nearest"`` for nearest upsampling, a 3x3
    convolution and the blur, ``"fused"`` for the transposed convolution and the blur. Both AdaINs of a block take
    the same style and the same noise map, as in the seed.
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: str | None,
                 impl: str | None = None):
        super().__init__()
        self.upsample = upsample
        self.impl = check_impl(impl)
        if upsample is None:
            self.const = nn.Parameter(torch.randn(1, out_channels, RESOLUTIONS[0], RESOLUTIONS[0]))
        elif upsample == "fused":
            self.conv1 = FusedUpsample(in_channels, out_channels, impl=impl)
        elif upsample == "nearest":
            self.conv1 = UpsampleConv2d(in_channels, out_channels, impl=impl)
        else:
            raise ValueError(f"upsample must be None, 'nearest' or 'fused', got {upsample!r}")
        self.adain1 = NoiseAdaIN(out_channels, style_dim, impl=impl)
        self.conv2 = EqualConv2d(out_channels, out_channels, 3, padding=1, impl=impl)
        self.adain2 = NoiseAdaIN(out_channels, style_dim, impl=impl)

    def first_conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample is None:
            # x only gives the batch size, as the seed's ConstantInput.
            return self.const.repeat(x.shape[0], 1, 1, 1)
        # The bias is added before the blur: blurring with zero padding does not commute with it at the borders.
        return blur(self.conv1(x), impl=self.impl)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.adain1(self.first_conv(x), style, noise)
        return self.adain2(self.conv2(out), style, noise)


class SynthesisNetwork(nn.Module):
    """The seed's ``Generator``: nine styled blocks (4 to 1024 px) and a linear 1x1 to-RGB per resolution."""

    def __init__(self, style_dim: int, fused: bool, channel_base: int, max_channels: int, impl: str | None = None):
        super().__init__()
        self.impl = check_impl(impl)
        widths = [channels_at(r, channel_base, max_channels) for r in RESOLUTIONS]
        blocks = []
        for i, resolution in enumerate(RESOLUTIONS):
            if i == 0:
                upsample = None
            elif fused and resolution >= FUSED_FROM_RESOLUTION:
                upsample = "fused"
            else:
                upsample = "nearest"
            blocks.append(StyledBlock(widths[max(i - 1, 0)], widths[i], style_dim, upsample, impl))
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(EqualConv2d(width, 3, 1, impl=impl) for width in widths)

    def forward(self, styles: Sequence[torch.Tensor], noise: Sequence[torch.Tensor], step: int = 0,
                alpha: float = -1, mixing_range: tuple[int, int] = (-1, -1)) -> torch.Tensor:
        step, alpha = check_step(step), check_alpha(alpha)
        batch = styles[0].shape[0]
        if not isinstance(noise, (list, tuple)):
            raise TypeError(f"noise must be a list of tensors [N, 1, 4 * 2**i, 4 * 2**i] for i = 0..step, got "
                            f"{type(noise).__name__}")
        if len(noise) < step + 1:
            raise ValueError(f"step {step} needs {step + 1} noise maps (4 to {RESOLUTIONS[step]} px), got {len(noise)}")
        for i, n in enumerate(noise[: step + 1]):
            expected = [batch, 1, RESOLUTIONS[i], RESOLUTIONS[i]]
            if not isinstance(n, torch.Tensor) or not n.is_floating_point() or list(n.shape) != expected:
                got = f"{n.dtype} {list(n.shape)}" if isinstance(n, torch.Tensor) else type(n).__name__
                raise ValueError(f"noise[{i}] must be a floating-point tensor {expected}, got {got}")
            if n.device != styles[0].device:
                raise ValueError(f"noise[{i}] is on {n.device} but the latents are on {styles[0].device}")
        block_styles = _styles_per_block(styles, step, _check_mixing_range(mixing_range, step, len(styles)))
        out = noise[0]
        for i in range(step + 1):
            below = out
            out = self.blocks[i](out, block_styles[i], noise[i])
        rgb = self.to_rgb[step](out)
        if fading_in(step, alpha):
            skip = upsample_nearest_2x(self.to_rgb[step - 1](below), impl=self.impl)
            rgb = (1 - alpha) * skip + alpha * rgb
        return rgb


def _check_mixing_range(mixing_range, step: int, n_styles: int) -> tuple[int, int]:
    """``(-1, -1)`` (no fixed range), or block indices ``(lo, hi)``, ``0 <= lo <= hi <= MAX_STEP`` with ``lo <= step``
    (some block takes the second style), and exactly two styles."""
    try:
        low, high = mixing_range
    except (TypeError, ValueError):
        raise ValueError(f"mixing_range must be a pair (lo, hi) of block indices, got {mixing_range!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (low, high)):
        raise ValueError(f"mixing_range must be a pair of ints, got {mixing_range!r}")
    low, high = int(low), int(high)
    if (low, high) == (-1, -1):
        return low, high
    if not (0 <= low <= high <= MAX_STEP and low <= step):
        raise ValueError(f"mixing_range must be (-1, -1) or block indices (lo, hi) with 0 <= lo <= hi <= {MAX_STEP} "
                         f"and lo <= step ({step}: blocks 0-{step} run), got {mixing_range!r}")
    if n_styles != 2:
        raise ValueError(f"mixing_range={mixing_range!r} takes exactly two latents, got {n_styles}")
    return low, high


def _styles_per_block(styles: Sequence[torch.Tensor], step: int, mixing_range: tuple[int, int]) -> list[torch.Tensor]:
    """The style each block ``0..step`` takes, as the seed chooses it.

    ``mixing_range == (-1, -1)``: with k styles, k - 1 crossover points are drawn (Python's ``random``, once per call)
    from ``range(step)``; a block takes the next style once its index passes the next crossover point. Otherwise
    blocks ``lo..hi`` take ``styles[1]`` and the others ``styles[0]``. (Where the seed would fail, drawing more
    crossover points than ``step`` offers, only ``step`` are drawn.)
    """
    if mixing_range != (-1, -1):
        low, high = mixing_range
        return [styles[1] if low <= i <= high else styles[0] for i in range(step + 1)]
    if len(styles) < 2:
        return [styles[0]] * (step + 1)
    crossovers = sorted(random.sample(range(step), min(len(styles) - 1, step)))
    chosen, current = [], 0
    for i in range(step + 1):
        if current < len(crossovers) and i > crossovers[current]:
            current += 1
        chosen.append(styles[current])
    return chosen


class StyledGenerator(nn.Module):
    """The seed's ``StyledGenerator``: mapping network and synthesis network, with mixing and truncation.

    Channels per resolution are ``min(max_channels, channel_base // resolution)``; the defaults are the seed's
    (512 up to 32 px, then 256, 128, 64, 32, 16). ``code_dim`` is both the latent and the style size. ``fused``
    upsamples the blocks from 128 px up with the transposed convolution. ``impl`` picks every op's implementation
    (``None``: ``STYLEGAN_CUDA_IMPL``, else ``auto``).
    """

    def __init__(self, code_dim: int = 512, n_mlp: int = 8, fused: bool = True, channel_base: int = 16384,
                 max_channels: int = 512, impl: str | None = None):
        super().__init__()
        check_widths(channel_base, max_channels)
        if code_dim < 1 or n_mlp < 0:
            raise ValueError(f"code_dim must be >= 1 and n_mlp >= 0, got code_dim={code_dim}, n_mlp={n_mlp}")
        self.config = dict(code_dim=code_dim, n_mlp=n_mlp, fused=fused, channel_base=channel_base,
                           max_channels=max_channels)
        self.mapping = MappingNetwork(code_dim, n_mlp, impl)
        self.synthesis = SynthesisNetwork(code_dim, fused, channel_base, max_channels, impl)

    def make_noise(self, batch: int, step: int, device=None) -> list[torch.Tensor]:
        """Fresh noise maps ``[batch, 1, 4 * 2**i, 4 * 2**i]`` for ``i = 0..step``."""
        step = check_step(step)
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 0:
            raise ValueError(f"batch must be an int >= 0, got {batch!r}")
        return [torch.randn(batch, 1, r, r, device=device) for r in RESOLUTIONS[: step + 1]]

    def forward(self, input, noise=None, step: int = 0, alpha: float = -1, mean_style: torch.Tensor | None = None,
                style_weight: float = 0, mixing_range: tuple[int, int] = (-1, -1)) -> torch.Tensor:
        """Images ``[N, 3, 4 * 2**step, 4 * 2**step]`` from latents ``input`` ``[N, code_dim]`` (or a list of them).

        ``noise``: a list of ``[N, 1, 4 * 2**i, 4 * 2**i]`` for ``i = 0..step`` (drawn when ``None``).
        ``alpha`` in ``[0, 1)`` fades the new top block in. ``mean_style`` with ``style_weight`` truncates every style
        to ``mean_style + style_weight * (w - mean_style)``. With several latents the styles mix (see
        :func:`_styles_per_block`).
        """
        latents = list(input) if isinstance(input, (list, tuple)) else [input]
        self._check_latents(latents)  # step and alpha: checked by make_noise and the synthesis network
        if isinstance(style_weight, bool) or not isinstance(style_weight, numbers.Real) \
                or not math.isfinite(style_weight):
            raise ValueError(f"style_weight must be a finite number, got {style_weight!r}")
        if mean_style is None and style_weight != 0:
            raise ValueError(f"style_weight={style_weight!r} truncates towards mean_style, which was not given "
                             f"(pass mean_style=g.mean_style(latents))")
        if mean_style is not None:
            code_dim = self.config["code_dim"]
            check_input_tensor("mean_style", mean_style, self)
            if mean_style.dim() not in (1, 2) or mean_style.shape[-1] != code_dim or mean_style.dim() == 2 \
                    and mean_style.shape[0] != 1:
                raise ValueError(f"mean_style must have shape [1, {code_dim}] (from mean_style()), got "
                                 f"{list(mean_style.shape)}")
        styles = [self.mapping(z) for z in latents]
        if noise is None:
            noise = self.make_noise(latents[0].shape[0], step, latents[0].device)
        if mean_style is not None:
            styles = [mean_style + style_weight * (w - mean_style) for w in styles]
        return self.synthesis(styles, noise, step, alpha, mixing_range)

    def mean_style(self, input: torch.Tensor) -> torch.Tensor:
        """The mean style ``[1, code_dim]`` of the latents ``input``, for truncation."""
        self._check_latents([input])
        if input.shape[0] == 0:
            raise ValueError(f"mean_style needs at least one latent, got {list(input.shape)}")
        return self.mapping(input).mean(0, keepdim=True)

    def _check_latents(self, latents: list) -> None:
        code_dim = self.config["code_dim"]
        if not latents:
            raise ValueError(f"input must be a latent tensor [N, {code_dim}] or a non-empty list of them")
        for i, z in enumerate(latents):
            if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != code_dim or not z.is_floating_point():
                got = f"{z.dtype} {list(z.shape)}" if isinstance(z, torch.Tensor) else type(z).__name__
                raise ValueError(f"latent {i} must be a floating-point tensor [N, {code_dim}], got {got}")
            check_input_tensor(f"latent {i}", z, self)
            if z.shape[0] != latents[0].shape[0]:
                raise ValueError(f"the latents must share one batch size: latent 0 has {latents[0].shape[0]}, "
                                 f"latent {i} has {z.shape[0]}")
