"""The fused ops. Each takes ``impl="auto" | "extension" | "reference"`` (see :mod:`stylegan_cuda.ops.dispatch`)."""

from .adain import NoiseAdaIN, adain_noise, adain_noise_reference
from .bias_act import FusedLeakyReLU, fused_bias_leaky_relu, fused_bias_leaky_relu_reference
from .build import ExtensionBuildError, load_extension
from .dispatch import IMPLS
from .upfirdn2d import (
    Blur,
    DownsampleAvg2x,
    UpsampleBlur,
    UpsampleNearest2x,
    blur,
    downsample_avg_2x,
    upfirdn2d,
    upfirdn2d_reference,
    upsample_blur,
    upsample_nearest_2x,
)

__all__ = [
    "IMPLS",
    "Blur",
    "DownsampleAvg2x",
    "ExtensionBuildError",
    "FusedLeakyReLU",
    "NoiseAdaIN",
    "UpsampleBlur",
    "UpsampleNearest2x",
    "adain_noise",
    "adain_noise_reference",
    "blur",
    "downsample_avg_2x",
    "fused_bias_leaky_relu",
    "fused_bias_leaky_relu_reference",
    "load_extension",
    "upfirdn2d",
    "upfirdn2d_reference",
    "upsample_blur",
    "upsample_nearest_2x",
]
