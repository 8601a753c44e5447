"""AdaIN with noise injection: noise -> leaky ReLU -> instance norm -> per-sample style, as one op."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .build import on_extension_loaded
from .dispatch import use_extension
from .layout import check_same_device, memory_format_of


def _check_args(x, noise, noise_weight, gamma, beta, eps):
    if x.dim() != 4:
        raise ValueError(f"x must have shape [N, C, H, W], got rank {x.dim()}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    n, c, h, w = x.shape
    expected = {"noise_weight": (c,), "gamma": (n, c), "beta": (n, c)}
    if noise is not None:
        expected["noise"] = (n, 1, h, w)
    tensors = {"noise": noise, "noise_weight": noise_weight, "gamma": gamma, "beta": beta}
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)} for x of shape {list(x.shape)}, got {list(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"{name} must be on the device of x ({x.device}), got {t.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have the dtype of x ({x.dtype}), got {t.dtype}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    smallest = torch.finfo(torch.float32).tiny
    if x.dtype != torch.float64 and eps < smallest:
        raise ValueError(f"eps must be >= {smallest:.4g} (the smallest normal float32: the statistics of {x.dtype} "
                         f"inputs are float32), got {eps}")


def adain_noise_reference(x, noise, noise_weight, gamma, beta, negative_slope=0.2, eps=1e-5) -> torch.Tensor:
    """The specification of :func:`adain_noise`, written as the seed's NoiseInjection, LeakyReLU and AdaIN."""
    _check_args(x, noise, noise_weight, gamma, beta, eps)
    memory_format = memory_format_of(x)
    if noise is not None:
        x = x + noise_weight.view(1, -1, 1, 1) * noise
    h = F.leaky_relu(x, negative_slope)
    y = gamma[:, :, None, None] * F.instance_norm(h, eps=eps) + beta[:, :, None, None]
    return y.contiguous(memory_format=memory_format)


def adain_noise(x, noise, noise_weight, gamma, beta, negative_slope=0.2, eps=1e-5, impl: str | None = None):
    """``y = gamma * (h - mean) / sqrt(var + eps) + beta`` with ``h = leaky_relu(x + noise_weight * noise)``.

    Args:
        x: ``[N, C, H, W]``, float16 / bfloat16 / float32 / float64, contiguous or channels_last (kept).
        noise: ``[N, 1, H, W]``, one map shared by every channel, or ``None`` for no noise.
        noise_weight: ``[C]``, the seed's ``NoiseInjection.weight`` after its equalized-LR scaling.
        gamma, beta: ``[N, C]``, the two halves of the style affine ``EqualLinear(style_dim, 2C)(w)``.
        negative_slope: the leaky ReLU's slope (the seed's 0.2, no gain).
        eps: > 0, added to the variance (``nn.InstanceNorm2d``'s 1e-5).
        impl: ``"auto"``, ``"extension"``, ``"reference"``, or ``None`` for ``STYLEGAN_CUDA_IMPL``.

    ``mean`` and the biased ``var`` are taken over ``H, W`` of each ``(n, c)``, exactly ``nn.InstanceNorm2d(C)``
    without affine or running statistics, computed in float32 (float64 for float64 inputs) from ``h - h[0]``, so a
    plane with a large mean and a small spread keeps its precision. Gradients flow to every tensor argument; forward
    saves ``x`` and two numbers per plane. Double backward is not supported and raises.
    """
    if not use_extension(impl, x.device.type):
        return adain_noise_reference(x, noise, noise_weight, gamma, beta, negative_slope, eps)
    _check_args(x, noise, noise_weight, gamma, beta, eps)
    y, _, _ = torch.ops.stylegan_cuda.adain_noise(x, noise, noise_weight, gamma, beta, float(negative_slope), float(eps))
    return y


class NoiseAdaIN(nn.Module):
    """Noise injection, leaky ReLU and adaptive instance norm of one styled convolution, initialized as the seed.

    Holds the per-channel noise weight (zeros, equalized LR with fan-in ``channels``) and the style affine
    ``EqualLinear(style_dim, 2 * channels)`` (weights N(0, 1) scaled by ``sqrt(2 / style_dim)``, bias 1 for gamma,
    0 for beta). ``forward(x, style, noise)`` takes the latent ``style`` ``[N, style_dim]``.
    """

    def __init__(self, channels: int, style_dim: int, negative_slope: float = 0.2, impl: str | None = None):
        super().__init__()
        self.channels = channels
        self.negative_slope = negative_slope
        self.impl = impl
        self.noise_weight = nn.Parameter(torch.zeros(channels))
        self.style_weight = nn.Parameter(torch.randn(2 * channels, style_dim))
        self.style_bias = nn.Parameter(torch.cat([torch.ones(channels), torch.zeros(channels)]))
        self.noise_gain = math.sqrt(2 / channels)
        self.style_gain = math.sqrt(2 / style_dim)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        gamma, beta = F.linear(style, self.style_weight * self.style_gain, self.style_bias).chunk(2, dim=1)
        noise_weight = self.noise_weight * self.noise_gain
        dtype = x.dtype
        return adain_noise(x, None if noise is None else noise.to(dtype), noise_weight.to(dtype), gamma.to(dtype),
                           beta.to(dtype), self.negative_slope, impl=self.impl)


@on_extension_loaded
def _register() -> None:
    def stats_like(x):
        return x.new_empty(x.shape[:2], dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)

    @torch.library.register_fake("stylegan_cuda::adain_noise")
    def _(x, noise, noise_weight, gamma, beta, negative_slope, eps):
        check_same_device("x", x, noise=noise, noise_weight=noise_weight, gamma=gamma, beta=beta)
        return torch.empty_like(x), stats_like(x), stats_like(x)

    @torch.library.register_fake("stylegan_cuda::adain_noise_backward")
    def _(grad_y, x, noise, noise_weight, gamma, mean, rstd, negative_slope):
        check_same_device("grad_y", grad_y, x=x, noise=noise, noise_weight=noise_weight, gamma=gamma, mean=mean,
                          rstd=rstd)
        return torch.empty_like(x), torch.empty_like(mean), torch.empty_like(mean), mean.new_empty(mean.shape[1:])
