"""upfirdn2d's helpers at the generator's and discriminator's shapes, against the seed's way of doing each.

The seed blurs with a depthwise 3x3 ``conv2d`` (groups = C), upsamples with ``F.interpolate`` before blurring, and
downsamples with ``F.avg_pool2d``.
"""

import torch
import torch.nn.functional as F

from stylegan_cuda.ops import blur, downsample_avg_2x, upsample_blur

from ..harness import OpCase


def _shapes(device: str, quick: bool):
    if device == "cpu":
        shapes = [(8, 512, 8, 8), (8, 256, 32, 32), (8, 128, 64, 64)]
        return shapes[-1:] if quick else shapes
    shapes = [(32, 512, 8, 8), (32, 512, 32, 32), (32, 128, 128, 128), (8, 64, 256, 256)]
    return shapes[2:3] if quick else shapes


def _inputs(shape):
    def make(device, dtype):
        seed_kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]], device=device, dtype=dtype) / 16
        return torch.randn(shape, device=device, dtype=dtype), seed_kernel.expand(shape[1], 1, 3, 3).contiguous()

    return make


def _seed_blur(x, weight):
    return F.conv2d(x, weight, padding=1, groups=x.shape[1])


def _traffic(inputs, out):
    # forward: read x, write the output; backward: read the output's gradient, write x's.
    step = (inputs[0].numel() + out.numel()) * inputs[0].element_size()
    return step, 2 * step


OPS = {
    "blur": (lambda x, w: blur(x, impl="extension"), _seed_blur),
    "upsample_blur": (lambda x, w: upsample_blur(x, impl="extension"),
                      lambda x, w: _seed_blur(F.interpolate(x, scale_factor=2, mode="nearest"), w)),
    "downsample_avg_2x": (lambda x, w: downsample_avg_2x(x, impl="extension"), lambda x, w: F.avg_pool2d(x, 2)),
}


def cases(device: str, quick: bool) -> list[OpCase]:
    return [
        OpCase(op=name, shape=shape, make_inputs=_inputs(shape), extension=extension, reference=reference,
               grad_inputs=1, traffic=_traffic)
        for name, (extension, reference) in OPS.items()
        for shape in _shapes(device, quick)
    ]
