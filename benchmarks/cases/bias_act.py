"""bias_act at the mapping network's and the convolutions' shapes."""

import math

import torch

from stylegan_cuda.ops import fused_bias_leaky_relu, fused_bias_leaky_relu_reference

from ..harness import OpCase

GAIN = math.sqrt(2)


def _shapes(device: str, quick: bool):
    if device == "cpu":
        shapes = [(8, 512), (8, 512, 8, 8), (8, 256, 32, 32), (8, 128, 64, 64)]
        return shapes[-1:] if quick else shapes
    shapes = [(32, 512), (32, 512, 8, 8), (32, 512, 32, 32), (32, 512, 64, 64), (16, 128, 128, 128), (8, 64, 256, 256)]
    return [shapes[0], shapes[3]] if quick else shapes


def _inputs(shape):
    def make(device, dtype):
        return (torch.randn(shape, device=device, dtype=dtype), torch.randn(shape[1], device=device, dtype=dtype))

    return make


def _traffic(inputs, out):
    x = inputs[0]
    # forward: read x, write y and one sign bit per element; backward: read grad and the bits, write grad_x (the bias
    # gradient is summed on the way on the CPU; the CUDA path re-reads grad_x for it, which is not counted).
    step = x.numel() * x.element_size()
    bits = x.numel() / 8
    fwd = 2 * step + bits
    return fwd, 2 * fwd


def cases(device: str, quick: bool) -> list[OpCase]:
    return [
        OpCase(
            op="bias_act",
            shape=shape,
            make_inputs=_inputs(shape),
            extension=lambda x, b: fused_bias_leaky_relu(x, b, 0.2, GAIN, impl="extension"),
            reference=lambda x, b: fused_bias_leaky_relu_reference(x, b, 0.2, GAIN),
            grad_inputs=2,
            traffic=_traffic,
        )
        for shape in _shapes(device, quick)
    ]
