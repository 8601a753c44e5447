"""adain_noise at the generator's shapes: every resolution's channels, batch 8 on the CPU and 32 on CUDA."""

import torch

from stylegan_cuda.ops import adain_noise, adain_noise_reference

from ..harness import OpCase

# (channels, resolution) of the seed's generator from 4x4 to 256x256.
GENERATOR = [(512, 4), (512, 8), (512, 16), (512, 32), (256, 64), (128, 128), (64, 256)]
TARGET = {"cpu": (8, 128, 64, 64), "cuda": (32, 128, 128, 128)}  # the README's targets


def _shapes(device: str, quick: bool):
    if quick:
        return [TARGET[device]]
    batch = 8 if device == "cpu" else 32
    shapes = [(batch, c, r, r) for c, r in GENERATOR]
    if TARGET[device] not in shapes:
        shapes.insert(-2, TARGET[device])
    return shapes


def _inputs(shape):
    n, c, h, w = shape

    def make(device, dtype):
        # x, noise_weight, gamma, beta take gradients (as in training); the noise map does not.
        return (torch.randn(shape, device=device, dtype=dtype), torch.randn(c, device=device, dtype=dtype),
                1 + torch.randn(n, c, device=device, dtype=dtype), torch.randn(n, c, device=device, dtype=dtype),
                torch.randn(n, 1, h, w, device=device, dtype=dtype))

    return make


def _traffic(inputs, out):
    x, noise = inputs[0], inputs[4]
    step = x.numel() * x.element_size()
    noise_bytes = noise.numel() * noise.element_size()
    # forward: read x (and the noise map), write y; backward: read grad_y and x (and the noise), write grad_x.
    forward = 2 * step + noise_bytes
    return forward, forward + 3 * step + noise_bytes


def cases(device: str, quick: bool) -> list[OpCase]:
    return [
        OpCase(
            op="adain",
            shape=shape,
            make_inputs=_inputs(shape),
            extension=lambda x, w, g, b, noise: adain_noise(x, noise, w, g, b, impl="extension"),
            reference=lambda x, w, g, b, noise: adain_noise_reference(x, noise, w, g, b),
            grad_inputs=4,
            traffic=_traffic,
        )
        for shape in _shapes(device, quick)
    ]
