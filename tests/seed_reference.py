"""An independent re-implementation of the seed's model.py (rosinality/style-based-gan-pytorch), for the tests.

Written from the seed's code as plain PyTorch with the seed's module and parameter names, so that its
``state_dict()`` has exactly the seed's checkpoint keys and shapes (``weight_orig`` for the equalized weights, the
blur buffers, the ``nn.Sequential`` indices) and its forward is the seed's function. The widths are parametrized
(``channel_base``, ``max_channels``) so that tiny models run on a CPU; the defaults are the seed's.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

RESOLUTIONS = [4 * 2**i for i in range(9)]


def widths(channel_base, max_channels):
    return [min(max_channels, channel_base // r) for r in RESOLUTIONS]


class EqualizedParams(nn.Module):
    """What the seed's ``equal_lr`` leaves of an nn.Conv2d / nn.Linear: ``weight_orig`` and ``bias``."""

    def __init__(self, shape, with_bias=True):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(shape))
        if with_bias:
            self.bias = nn.Parameter(torch.zeros(shape[0]))

    def weight(self):
        w = self.weight_orig
        return w * math.sqrt(2 / (w.size(1) * w[0][0].numel()))


class EqualConv2d(nn.Module):
    def __init__(self, cin, cout, k, padding=0):
        super().__init__()
        self.conv = EqualizedParams((cout, cin, k, k))
        self.padding = padding

    def forward(self, x):
        return F.conv2d(x, self.conv.weight(), self.conv.bias, padding=self.padding)


class EqualLinear(nn.Module):
    def __init__(self, din, dout):
        super().__init__()
        self.linear = EqualizedParams((dout, din))

    def forward(self, x):
        return F.linear(x, self.linear.weight(), self.linear.bias)


def four_tap_kernel(weight):
    padded = F.pad(weight, [1, 1, 1, 1])
    return (padded[:, :, 1:, 1:] + padded[:, :, :-1, 1:] + padded[:, :, 1:, :-1] + padded[:, :, :-1, :-1]) / 4


class FusedUpsample(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cin, cout, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.multiplier = math.sqrt(2 / (cin * 9))

    def forward(self, x):
        return F.conv_transpose2d(x, four_tap_kernel(self.weight * self.multiplier), self.bias, stride=2, padding=1)


class FusedDownsample(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.multiplier = math.sqrt(2 / (cin * 9))

    def forward(self, x):
        return F.conv2d(x, four_tap_kernel(self.weight * self.multiplier), self.bias, stride=2, padding=1)


class Blur(nn.Module):
    def __init__(self, channels):
        super().__init__()
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
        self.register_buffer("weight", k.expand(channels, 1, 3, 3).clone())
        self.register_buffer("weight_flip", torch.flip(k, [0, 1]).expand(channels, 1, 3, 3).clone())

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1, groups=x.shape[1])


class PixelNorm(nn.Module):
    def forward(self, x):
        return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class NoiseInjection(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x, noise):
        return x + self.weight_orig * math.sqrt(2 / self.weight_orig.size(1)) * noise


class ConstantInput(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, x):
        return self.input.repeat(x.shape[0], 1, 1, 1)


class AdaptiveInstanceNorm(nn.Module):
    def __init__(self, channels, style_dim):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels)
        self.style = EqualLinear(style_dim, 2 * channels)
        with torch.no_grad():
            self.style.linear.bias[:channels] = 1
            self.style.linear.bias[channels:] = 0

    def forward(self, x, style):
        gamma, beta = self.style(style)[:, :, None, None].chunk(2, 1)
        return gamma * self.norm(x) + beta


class StyledConvBlock(nn.Module):
    def __init__(self, cin, cout, style_dim, initial=False, fused=False):
        super().__init__()
        if initial:
            self.conv1 = ConstantInput(cin)
        elif fused:
            self.conv1 = nn.Sequential(FusedUpsample(cin, cout), Blur(cout))
        else:
            self.conv1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), EqualConv2d(cin, cout, 3, 1),
                                       Blur(cout))
        self.noise1 = NoiseInjection(cout)
        self.adain1 = AdaptiveInstanceNorm(cout, style_dim)
        self.lrelu1 = nn.LeakyReLU(0.2)
        self.conv2 = EqualConv2d(cout, cout, 3, 1)
        self.noise2 = NoiseInjection(cout)
        self.adain2 = AdaptiveInstanceNorm(cout, style_dim)
        self.lrelu2 = nn.LeakyReLU(0.2)

    def forward(self, x, style, noise):
        out = self.adain1(self.lrelu1(self.noise1(self.conv1(x), noise)), style)
        return self.adain2(self.lrelu2(self.noise2(self.conv2(out), noise)), style)


class Generator(nn.Module):
    def __init__(self, style_dim, fused, channel_base, max_channels):
        super().__init__()
        w = widths(channel_base, max_channels)
        self.progression = nn.ModuleList(
            [StyledConvBlock(w[0], w[0], style_dim, initial=True)]
            + [StyledConvBlock(w[i - 1], w[i], style_dim, fused=fused and i >= 5) for i in range(1, 9)]
        )
        self.to_rgb = nn.ModuleList(EqualConv2d(c, 3, 1) for c in w)

    def forward(self, style, noise, step=0, alpha=-1, mixing_range=(-1, -1)):
        out = noise[0]
        if len(style) < 2:
            inject_index = [len(self.progression) + 1]
        else:
            inject_index = sorted(random.sample(list(range(step)), len(style) - 1))
        crossover = 0
        for i, (conv, to_rgb) in enumerate(zip(self.progression, self.to_rgb)):
            if mixing_range == (-1, -1):
                if crossover < len(inject_index) and i > inject_index[crossover]:
                    crossover = min(crossover + 1, len(style))
                style_step = style[crossover]
            else:
                style_step = style[1] if mixing_range[0] <= i <= mixing_range[1] else style[0]
            if i > 0 and step > 0:
                out_prev = out
            out = conv(out, style_step, noise[i])
            if i == step:
                out = to_rgb(out)
                if i > 0 and 0 <= alpha < 1:
                    skip = F.interpolate(self.to_rgb[i - 1](out_prev), scale_factor=2, mode="nearest")
                    out = (1 - alpha) * skip + alpha * out
                break
        return out


class StyledGenerator(nn.Module):
    def __init__(self, code_dim=512, n_mlp=8, fused=True, channel_base=16384, max_channels=512):
        super().__init__()
        self.generator = Generator(code_dim, fused, channel_base, max_channels)
        layers = [PixelNorm()]
        for _ in range(n_mlp):
            layers += [EqualLinear(code_dim, code_dim), nn.LeakyReLU(0.2)]
        self.style = nn.Sequential(*layers)

    def forward(self, input, noise=None, step=0, alpha=-1, mean_style=None, style_weight=0, mixing_range=(-1, -1)):
        inputs = list(input) if isinstance(input, (list, tuple)) else [input]
        styles = [self.style(z) for z in inputs]
        if noise is None:
            noise = [torch.randn(inputs[0].shape[0], 1, r, r, device=inputs[0].device) for r in RESOLUTIONS[: step + 1]]
        if mean_style is not None:
            styles = [mean_style + style_weight * (s - mean_style) for s in styles]
        return self.generator(styles, noise, step, alpha, mixing_range=mixing_range)

    def mean_style(self, input):
        return self.style(input).mean(0, keepdim=True)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, kernel2=3, padding2=1, downsample=False, fused=False):
        super().__init__()
        self.conv1 = nn.Sequential(EqualConv2d(cin, cout, 3, 1), nn.LeakyReLU(0.2))
        if downsample and fused:
            self.conv2 = nn.Sequential(Blur(cout), FusedDownsample(cout, cout), nn.LeakyReLU(0.2))
        elif downsample:
            self.conv2 = nn.Sequential(Blur(cout), EqualConv2d(cout, cout, kernel2, padding2), nn.AvgPool2d(2),
                                       nn.LeakyReLU(0.2))
        else:
            self.conv2 = nn.Sequential(EqualConv2d(cout, cout, kernel2, padding2), nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.conv2(self.conv1(x))


class Discriminator(nn.Module):
    def __init__(self, fused=True, from_rgb_activate=True, channel_base=16384, max_channels=512):
        super().__init__()
        w = widths(channel_base, max_channels)[::-1]  # by block: 1024 px first
        self.progression = nn.ModuleList(
            [ConvBlock(w[p], w[p + 1], downsample=True, fused=fused and p < 4) for p in range(8)]
            + [ConvBlock(w[8] + 1, w[8], 4, 0)]
        )

        def from_rgb(c):
            return nn.Sequential(EqualConv2d(3, c, 1), nn.LeakyReLU(0.2)) if from_rgb_activate else EqualConv2d(3, c, 1)

        self.from_rgb = nn.ModuleList(from_rgb(c) for c in w)
        self.n_layer = len(self.progression)
        self.linear = EqualLinear(w[8], 1)

    def forward(self, input, step=0, alpha=-1):
        for i in range(step, -1, -1):
            index = self.n_layer - i - 1
            if i == step:
                out = self.from_rgb[index](input)
            if i == 0:
                mean_std = torch.sqrt(out.var(0, unbiased=False) + 1e-8).mean()
                out = torch.cat([out, mean_std.expand(out.size(0), 1, 4, 4)], 1)
            out = self.progression[index](out)
            if i > 0 and i == step and 0 <= alpha < 1:
                skip = self.from_rgb[index + 1](F.avg_pool2d(input, 2))
                out = (1 - alpha) * skip + alpha * out
        return self.linear(out.squeeze(2).squeeze(2))


def optimizers(generator, discriminator, lr=1e-3):
    """The seed train.py's Adam optimizers: the synthesis network, then the mapping network at lr x 0.01."""
    g_optimizer = torch.optim.Adam(generator.generator.parameters(), lr=lr, betas=(0.0, 0.99))
    g_optimizer.add_param_group({"params": generator.style.parameters(), "lr": lr * 0.01, "mult": 0.01})
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.0, 0.99))
    return g_optimizer, d_optimizer
