"""upfirdn2d: upsample by zero insertion, pad, FIR filter, downsample. Every blur and resampling of the model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .build import on_extension_loaded
from .dispatch import use_extension
from .layout import check_same_device, memory_format_of

MAX_KERNEL_SIZE = 16
_BINOMIAL_3 = (1.0, 2.0, 1.0)
_BINOMIAL_4 = (1.0, 3.0, 3.0, 1.0)
_BOX_2 = (1.0, 1.0)


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints (x, y), got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return pair


def _as_2d_kernel(kernel: torch.Tensor) -> torch.Tensor:
    if not isinstance(kernel, torch.Tensor) or not kernel.is_floating_point():
        raise TypeError(f"kernel must be a floating-point tensor, got {getattr(kernel, 'dtype', type(kernel))}")
    if kernel.dim() == 1:
        kernel = kernel[:, None] * kernel[None, :]
    if kernel.dim() != 2:
        raise ValueError(f"kernel must be 1-D (separable) or 2-D [kh, kw], got shape {tuple(kernel.shape)}")
    if max(kernel.shape) > MAX_KERNEL_SIZE or min(kernel.shape) < 1:
        raise ValueError(f"kernel must be between 1x1 and {MAX_KERNEL_SIZE}x{MAX_KERNEL_SIZE}, got {tuple(kernel.shape)}")
    if kernel.requires_grad:
        raise ValueError("kernel must not require a gradient: upfirdn2d differentiates with respect to x only")
    return kernel


def _check_args(x, kernel, up, down, pad):
    """Validated (2-D kernel, (upx, upy), (downx, downy), (px0, px1, py0, py1), (out_h, out_w))."""
    if x.dim() != 4:
        raise ValueError(f"x must have shape [N, C, H, W], got rank {x.dim()}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    kernel = _as_2d_kernel(kernel)
    if kernel.device != x.device:
        raise ValueError(f"kernel must be on the device of x ({x.device}), got {kernel.device}")
    up, down = _pair(up, "up"), _pair(down, "down")
    pad = tuple(pad)
    if len(pad) != 4 or not all(isinstance(p, int) for p in pad):
        raise ValueError(f"pad must be four ints (x0, x1, y0, y1), got {pad!r}")
    kh, kw = kernel.shape
    out_h = (x.shape[2] * up[1] + pad[2] + pad[3] - kh) // down[1] + 1
    out_w = (x.shape[3] * up[0] + pad[0] + pad[1] - kw) // down[0] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"upfirdn2d of a {x.shape[2]}x{x.shape[3]} input with up={up}, pad={pad}, a {kh}x{kw} kernel and "
            f"down={down} leaves an empty output ({out_h}x{out_w})"
        )
    return kernel, up, down, pad, (out_h, out_w)


def upfirdn2d_reference(x, kernel, up=1, down=1, pad=(0, 0, 0, 0)) -> torch.Tensor:
    """The specification of :func:`upfirdn2d`, in plain PyTorch (zero insertion, padding, depthwise conv2d)."""
    kernel, (upx, upy), (downx, downy), (px0, px1, py0, py1), _ = _check_args(x, kernel, up, down, pad)
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, 1, w, 1)
    y = F.pad(y, [0, upx - 1, 0, 0, 0, upy - 1]).reshape(n * c, 1, h * upy, w * upx)
    y = F.pad(y, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    y = y[:, :, max(-py0, 0) : y.shape[2] - max(-py1, 0), max(-px0, 0) : y.shape[3] - max(-px1, 0)]
    weight = torch.flip(kernel, [0, 1])[None, None].to(y.dtype)
    y = F.conv2d(y, weight)[:, :, ::downy, ::downx]
    return y.reshape(n, c, y.shape[2], y.shape[3]).contiguous(memory_format=memory_format_of(x))


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0, 0, 0), impl: str | None = None) -> torch.Tensor:
    """Upsample, pad, filter, downsample every channel of ``x`` ``[N, C, H, W]``:

    1. insert ``up - 1`` zeros after each pixel (both axes);
    2. pad with zeros by ``pad = (x0, x1, y0, y1)`` (negative values crop);
    3. convolve with the FIR ``kernel`` (a true convolution: the kernel is flipped), ``[kh, kw]`` up to
       ``MAX_KERNEL_SIZE``, or 1-D for the separable ``outer(kernel, kernel)``;
    4. keep every ``down``-th pixel (both axes).

    ``up`` and ``down`` are ints or ``(x, y)`` pairs. The output is
    ``[N, C, (H*upy + y0 + y1 - kh) // downy + 1, (W*upx + x0 + x1 - kw) // downx + 1]`` in the memory format of
    ``x``. The op is linear in ``x``; its gradient is the same op with ``up`` and ``down`` swapped and the kernel
    flipped, so gradients of every order exist. The kernel takes no gradient and must be finite: the compiled
    kernels skip the taps that meet inserted zeros or padding instead of multiplying them, so a NaN or Inf in it
    would not spread to those outputs as it does in the reference.
    """
    if not use_extension(impl, x.device.type):
        return upfirdn2d_reference(x, kernel, up, down, pad)
    kernel, up, down, pad, _ = _check_args(x, kernel, up, down, pad)
    kernel = kernel.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return torch.ops.stylegan_cuda.upfirdn2d(x, kernel, up, down, pad)


_filters: dict[tuple, torch.Tensor] = {}


def _fixed_filter(taps: tuple[float, ...], device: torch.device, gain: float = 1.0) -> torch.Tensor:
    """``gain * outer(taps, taps) / sum(taps)**2``: made once per device in eager mode, a constant when compiled.

    Made outside inference mode, so that a first call under ``torch.inference_mode`` does not cache an inference
    tensor that later calls with gradients could not save for backward.
    """
    if not torch.compiler.is_compiling() and (taps, gain, device) in _filters:
        return _filters[(taps, gain, device)]
    with torch.inference_mode(False):
        k = torch.tensor(taps, device=device)
        kernel = torch.outer(k, k) * (gain / sum(taps) ** 2)
    if not torch.compiler.is_compiling():
        _filters[(taps, gain, device)] = kernel
    return kernel


def blur(x: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """The seed's ``Blur``: depthwise ``[[1,2,1],[2,4,2],[1,2,1]] / 16``, zero padding 1, same size out."""
    return upfirdn2d(x, _fixed_filter(_BINOMIAL_3, x.device), pad=(1, 1, 1, 1), impl=impl)


def upsample_nearest_2x(x: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="nearest")``: zero insertion by 2 and a 2x2 box of ones."""
    return upfirdn2d(x, _fixed_filter(_BOX_2, x.device, gain=4.0), up=2, pad=(1, 0, 1, 0), impl=impl)


def downsample_avg_2x(x: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)``: a 2x2 box of 1/4, keeping every second pixel."""
    return upfirdn2d(x, _fixed_filter(_BOX_2, x.device), down=2, impl=impl)


def upsample_blur(x: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """``blur(upsample_nearest_2x(x))`` in one pass: zero insertion by 2 and the 4x4 binomial ``[1,3,3,1]`` filter.

    Equal everywhere, borders included: the nearest-upsampled image is zero outside exactly where the
    zero-inserted one is.
    """
    return upfirdn2d(x, _fixed_filter(_BINOMIAL_4, x.device, gain=4.0), up=2, pad=(2, 1, 2, 1), impl=impl)


class _Resample(nn.Module):
    def __init__(self, impl: str | None = None):
        super().__init__()
        self.impl = impl


class Blur(_Resample):
    """:func:`blur` as a layer."""

    def forward(self, x):
        return blur(x, self.impl)


class UpsampleBlur(_Resample):
    """:func:`upsample_blur` as a layer."""

    def forward(self, x):
        return upsample_blur(x, self.impl)


class UpsampleNearest2x(_Resample):
    """:func:`upsample_nearest_2x` as a layer."""

    def forward(self, x):
        return upsample_nearest_2x(x, self.impl)


class DownsampleAvg2x(_Resample):
    """:func:`downsample_avg_2x` as a layer."""

    def forward(self, x):
        return downsample_avg_2x(x, self.impl)


@on_extension_loaded
def _register() -> None:
    @torch.library.register_fake("stylegan_cuda::upfirdn2d")
    def _(x, kernel, up, down, pad, flip_kernel=False):
        check_same_device("x", x, kernel=kernel)
        (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1) = up, down, pad
        kh, kw = kernel.shape
        out_h = (x.shape[2] * up_y + pad_y0 + pad_y1 - kh) // down_y + 1
        out_w = (x.shape[3] * up_x + pad_x0 + pad_x1 - kw) // down_x + 1
        torch._check(out_h >= 1 and out_w >= 1, lambda: "upfirdn2d leaves an empty output")
        shape = (x.shape[0], x.shape[1], out_h, out_w)
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))
