"""upfirdn2d and its helpers: the kernels against the reference and the seed's ops, on CPU and (where present) CUDA."""

import importlib
import random

import pytest
import torch
import torch.nn.functional as F

from op_testing import (
    DTYPES,
    LOW_PRECISION,
    as_layout,
    assert_cpu_half_is_float32_rounded,
    assert_same_layout,
    check_forward,
)
from stylegan_cuda.ops import (
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

# (shape of x, channels_last, kernel shape, up, down, pad): the one list behind every test below. The wide samples
# reach the CUDA kernel's tiled cases (blur, upsample_blur and their gradients, the 2x2 boxes) across tile borders.
SAMPLES = [
    ((2, 3, 8, 8), False, (3, 3), 1, 1, (1, 1, 1, 1)),  # blur
    ((2, 3, 8, 8), True, (3, 3), 1, 1, (1, 1, 1, 1)),
    ((2, 4, 7, 5), False, (4, 4), 2, 1, (2, 1, 2, 1)),  # upsample_blur, odd sizes
    ((2, 4, 7, 5), True, (4, 4), 2, 1, (2, 1, 2, 1)),
    ((1, 2, 9, 6), False, (4, 4), 1, 2, (1, 1, 1, 1)),  # blur + downsample, output size floored
    ((2, 3, 6, 7), True, (2, 2), 1, 2, (0, 0, 0, 0)),  # avg_pool2d
    ((1, 1, 1, 1), False, (3, 3), 1, 1, (1, 1, 1, 1)),
    ((1, 2, 1, 1), False, (4, 4), 4, 1, (3, 3, 3, 3)),
    ((2, 3, 13, 7), False, (5, 3), (2, 3), (3, 2), (4, -2, -1, 6)),  # per-axis factors, crops
    ((1, 5, 5, 9), True, (8, 8), (4, 1), (1, 4), (7, 6, 3, 2)),
    ((1, 2, 6, 6), False, (4,), 2, 2, (1, 1, 1, 1)),  # separable 1-D kernel
    ((1, 2, 2, 3), False, (3, 3), 1, 1, (10, 5, 0, 12)),  # pads larger than the image
    ((1, 2, 12, 10), False, (1, 16), 1, 3, (-3, 12, -5, 0)),
    ((2, 3, 11, 13), False, (8, 8), 1, 1, (3, 4, 4, 3)),  # 64 taps an output: summed 16 at a time on the CPU
    ((1, 2, 37, 70), False, (3, 3), 1, 1, (1, 1, 1, 1)),
    ((1, 2, 20, 35), False, (4, 4), 2, 1, (2, 1, 2, 1)),
    ((1, 2, 50, 131), False, (4, 4), 1, 2, (1, 1, 1, 1)),
    ((1, 2, 18, 40), False, (2, 2), 2, 1, (1, 0, 1, 0)),
    ((1, 2, 33, 130), False, (2, 2), 1, 2, (0, 0, 0, 0)),
]
IDS = [f"{'x'.join(map(str, s[0]))}{'-cl' if s[1] else ''}-k{'x'.join(map(str, s[2]))}-up{s[3]}-down{s[4]}"
       for s in SAMPLES]
SMALL = [(s, i) for s, i in zip(SAMPLES, IDS) if s[0][2] * s[0][3] <= 100]


def make_inputs(sample, device, dtype, requires_grad=False):
    shape, channels_last, kernel_shape, up, down, pad = sample
    x = as_layout(torch.randn(shape, device=device, dtype=dtype), channels_last).requires_grad_(requires_grad)
    return x, torch.randn(kernel_shape, device=device), up, down, pad


def run_extension(x, kernel, up=1, down=1, pad=(0, 0, 0, 0)):
    return upfirdn2d(x, kernel, up, down, pad, impl="extension")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_forward_matches_reference(sample, device, dtype):
    check_forward(run_extension, upfirdn2d_reference, make_inputs(sample, device, dtype), dtype)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_cpu_half_types_are_float32_rounded(sample, dtype):
    assert_cpu_half_is_float32_rounded(run_extension, make_inputs(sample, "cpu", dtype))


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_backward_matches_reference(sample, device):
    x, *args = make_inputs(sample, device, torch.float32, requires_grad=True)
    grad_out = torch.randn_like(upfirdn2d_reference(x, *args))
    (got,) = torch.autograd.grad(run_extension(x, *args), x, grad_out)
    (want,) = torch.autograd.grad(upfirdn2d_reference(x, *args), x, grad_out)
    torch.testing.assert_close(got, want)
    assert_same_layout(got, x)


@pytest.mark.parametrize("sample", [s for s, _ in SMALL], ids=[i for _, i in SMALL])
def test_gradcheck_and_gradgradcheck(sample, device):
    x, *args = make_inputs(sample, device, torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: run_extension(x, *args), x)
    assert torch.autograd.gradgradcheck(lambda x: run_extension(x, *args), x)


def _op_args(x, kernel, up, down, pad):
    up = (up, up) if isinstance(up, int) else up
    down = (down, down) if isinstance(down, int) else down
    kernel = torch.outer(kernel, kernel) if kernel.dim() == 1 else kernel
    return (x, kernel, up, down, pad)


@pytest.mark.parametrize("sample", [s for s, _ in SMALL], ids=[i for _, i in SMALL])
def test_opcheck(sample, device):
    args = _op_args(*make_inputs(sample, device, torch.float32, requires_grad=True))
    torch.library.opcheck(torch.ops.stylegan_cuda.upfirdn2d.default, args)
    torch.library.opcheck(torch.ops.stylegan_cuda.upfirdn2d.default, args, {"flip_kernel": True})


def test_random_geometries_match_reference(device):
    """Seeded random up / down / pad / kernel sizes and shapes, forward and gradient, in float64."""
    rng = random.Random(1234)
    for _ in range(60):
        kh, kw = rng.randint(1, 9), rng.randint(1, 9)
        up = (rng.choice([1, 1, 2, 3, 4]), rng.choice([1, 1, 2, 3, 4]))
        down = (rng.choice([1, 2, 4]), rng.choice([1, 2, 3]))
        h, w = rng.randint(1, 12), rng.randint(1, 12)
        pad = tuple(rng.randint(-2, kw + 2) for _ in range(2)) + tuple(rng.randint(-2, kh + 2) for _ in range(2))
        if (h * up[1] + pad[2] + pad[3] - kh) < 0 or (w * up[0] + pad[0] + pad[1] - kw) < 0:
            continue
        x = as_layout(torch.randn(2, 3, h, w, device=device, dtype=torch.float64), rng.random() < 0.3)
        x.requires_grad_()
        kernel = torch.randn(kh, kw, device=device)
        got = run_extension(x, kernel, up, down, pad)
        want = upfirdn2d_reference(x, kernel, up, down, pad)
        torch.testing.assert_close(got, want, msg=f"up={up} down={down} pad={pad} k={kh}x{kw} x={h}x{w}")
        grad_out = torch.randn_like(want)
        torch.testing.assert_close(torch.autograd.grad(got, x, grad_out)[0], torch.autograd.grad(want, x, grad_out)[0])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (2, 3, 5, 8), (1, 4, 36, 70)])
def test_helpers_equal_the_seeds_ops(shape, channels_last, device):
    x = as_layout(torch.randn(shape, device=device, dtype=torch.float64), channels_last)
    channels = shape[1]
    seed_kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]], device=device, dtype=x.dtype) / 16
    seed_blur = F.conv2d(x, seed_kernel.expand(channels, 1, 3, 3), padding=1, groups=channels)
    torch.testing.assert_close(blur(x, impl="extension"), seed_blur)
    seed_up = F.interpolate(x, scale_factor=2, mode="nearest")
    assert torch.equal(upsample_nearest_2x(x, impl="extension"), seed_up)
    if min(shape[2:]) >= 2:
        torch.testing.assert_close(downsample_avg_2x(x, impl="extension"), F.avg_pool2d(x, 2))
    # One pass of the 4x4 binomial on the zero-inserted image = the 3x3 blur of the nearest-upsampled one.
    torch.testing.assert_close(upsample_blur(x, impl="extension"), blur(seed_up, impl="extension"))
    torch.testing.assert_close(upsample_blur(x.float(), impl="extension"), blur(seed_up.float(), impl="extension"))
    for out in (blur(x, impl="extension"), upsample_blur(x, impl="extension")):
        assert_same_layout(out, x)


def test_modules_match_functions(device):
    x = torch.randn(2, 3, 6, 6, device=device)
    for module, fn in ((Blur, blur), (UpsampleBlur, upsample_blur), (UpsampleNearest2x, upsample_nearest_2x),
                       (DownsampleAvg2x, downsample_avg_2x)):
        torch.testing.assert_close(module(impl="extension")(x), fn(x, impl="reference"))


def test_compiles_without_graph_break(device):
    x = torch.randn(2, 4, 8, 8, device=device, requires_grad=True)

    def fn(x):
        return downsample_avg_2x(blur(upsample_blur(x * 2, impl="extension"), impl="extension"), impl="extension")

    for backend in ("aot_eager", "inductor"):
        compiled = torch.compile(fn, fullgraph=True, backend=backend)
        got = torch.autograd.grad(compiled(x).square().sum(), x)[0]
        want = torch.autograd.grad(fn(x).square().sum(), x)[0]
        torch.testing.assert_close(got, want)
        torch._dynamo.reset()


def test_r1_style_penalty_matches_reference(device):
    """The gradient of a gradient norm, as R1 / WGAN-GP take it through the discriminator's blur and downsampling."""
    x = torch.randn(2, 3, 8, 8, device=device, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, device=device, dtype=torch.float64, requires_grad=True)

    def penalty(impl):
        y = downsample_avg_2x(F.conv2d(blur(x, impl=impl), weight, padding=1), impl=impl)
        y = upfirdn2d(y, torch.ones(4, device=device) / 4, down=2, pad=(1, 1, 1, 1), impl=impl)
        (grad_x,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), weight)[0]

    torch.testing.assert_close(penalty("extension"), penalty("reference"))


def test_empty_batch_and_non_dense_input(device):
    kernel = torch.randn(3, 3, device=device)
    empty = torch.randn(0, 3, 5, 5, device=device)
    assert run_extension(empty, kernel, 2, 1, (1, 1, 1, 1)).shape == (0, 3, 10, 10)
    # An empty image padded to a non-empty output: the output is zeros, the gradient as empty as the image.
    empty_rows = torch.randn(2, 3, 0, 4, device=device, requires_grad=True)
    y = run_extension(empty_rows, kernel, 1, 1, (3, 3, 3, 3))
    assert torch.equal(y, torch.zeros(2, 3, 4, 8, device=device))
    (grad,) = torch.autograd.grad(y.sum(), empty_rows)
    assert grad.shape == empty_rows.shape
    x = torch.randn(2, 6, 9, 9, device=device)[:, ::2, 1:, ::2]
    torch.testing.assert_close(run_extension(x, kernel, 2, 1, (1, 1, 1, 1)),
                               upfirdn2d_reference(x, kernel, 2, 1, (1, 1, 1, 1)))


@pytest.mark.parametrize(
    "x_shape, kernel, kwargs, error, match",
    [
        ((3, 8, 8), torch.ones(3, 3), {}, ValueError, "x must have shape"),
        ((1, 1, 8, 8), torch.ones(2, 3, 3), {}, ValueError, "kernel must be 1-D"),
        ((1, 1, 8, 8), torch.ones(3, 3, dtype=torch.long), {}, TypeError, "kernel must be a floating-point"),
        ((1, 1, 8, 8), torch.ones(17, 17), {}, ValueError, "between 1x1 and 16x16"),
        ((1, 1, 8, 8), torch.ones(3, 3), {"up": 0}, ValueError, "up must be >= 1"),
        ((1, 1, 8, 8), torch.ones(3, 3), {"down": (1, 0)}, ValueError, "down must be >= 1"),
        ((1, 1, 8, 8), torch.ones(3, 3), {"pad": (1, 1)}, ValueError, "pad must be four ints"),
        ((1, 1, 2, 2), torch.ones(3, 3), {}, ValueError, "empty output"),
        ((1, 1, 8, 8), torch.ones(3, 3), {"pad": (-4, -4, 0, 0)}, ValueError, "empty output"),
        ((1, 1, 8, 8), torch.ones(3, 3, requires_grad=True), {}, ValueError, "kernel must not require a gradient"),
    ],
)
def test_bad_arguments(x_shape, kernel, kwargs, error, match):
    x = torch.randn(x_shape)
    for impl in ("extension", "reference"):
        with pytest.raises(error, match=match):
            upfirdn2d(x, kernel, impl=impl, **kwargs)


def test_float64_keeps_the_kernel_in_float64(device):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device=device)
    kernel = torch.tensor([0.1, 0.7, 0.2], dtype=torch.float64, device=device)  # none of them a float32
    torch.testing.assert_close(run_extension(x, kernel, 1, 1, (1, 1, 1, 1)),
                               upfirdn2d_reference(x, kernel, 1, 1, (1, 1, 1, 1)), rtol=1e-14, atol=1e-14)


def test_down_wider_than_the_image(device):
    """A down factor far beyond the padded row: the row buffers stay the size of the row, not of the factor."""
    x, kernel = torch.randn(1, 3, 4, 16, device=device), torch.randn(1, 8, device=device)
    torch.testing.assert_close(run_extension(x, kernel, 1, (10**8, 1)), upfirdn2d_reference(x, kernel, 1, (10**8, 1)))


def test_fixed_filters_made_under_inference_mode_serve_training(monkeypatch, device):
    """A first blur under inference mode (sampling before training) must not cache an inference-mode filter."""
    monkeypatch.setattr(importlib.import_module("stylegan_cuda.ops.upfirdn2d"), "_filters", {})
    with torch.inference_mode():
        blur(torch.randn(1, 2, 8, 8, device=device), impl="extension")
    x = torch.randn(1, 2, 8, 8, device=device, requires_grad=True)
    (grad,) = torch.autograd.grad(blur(x, impl="extension").sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad(blur(x, impl="reference").sum(), x)[0])


def test_bad_dtypes_and_devices():
    with pytest.raises(TypeError, match="x must be a floating-point"):
        upfirdn2d(torch.ones(1, 1, 4, 4, dtype=torch.int32), torch.ones(3, 3), impl="extension")
    with pytest.raises(ValueError, match="kernel must be on the device of x"):
        upfirdn2d(torch.ones(1, 1, 4, 4), torch.ones(3, 3, device="meta"), impl="extension")
    with pytest.raises(ValueError, match="impl must be one of"):
        upfirdn2d(torch.ones(1, 1, 4, 4), torch.ones(3, 3), impl="fast")


def test_kernel_checks_its_arguments():
    """The registered op validates on its own, for callers that reach it through torch.ops."""
    op = torch.ops.stylegan_cuda.upfirdn2d
    x = torch.ones(1, 1, 4, 4)
    one, pad = (1, 1), (1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="kernel must be float32"):
        op(x, torch.ones(3, 3, dtype=torch.float64), one, one, pad)
    with pytest.raises(RuntimeError, match="kernel must be float64 for float64 x"):
        op(x.double(), torch.ones(3, 3), one, one, pad)
    with pytest.raises(RuntimeError, match="between 1x1 and 16x16"):
        op(x, torch.ones(1, 17), one, one, pad)
    with pytest.raises(RuntimeError, match="up must be >= 1"):
        op(x, torch.ones(3, 3), (0, 1), one, pad)
    with pytest.raises(RuntimeError, match="empty output"):
        op(x, torch.ones(3, 3), one, one, (-3, 0, 0, 0))
    with pytest.raises(RuntimeError, match=r"pad must be \(x0, x1, y0, y1\)"):
        op(x, torch.ones(3, 3), one, one, (1, 1))
    with pytest.raises(RuntimeError, match="kernel must be on the same device as x"):
        op(x, torch.ones(3, 3, device="meta"), one, one, pad)
    with pytest.raises(RuntimeError, match="x must have shape"):
        op(torch.ones(4, 4), torch.ones(3, 3), one, one, pad)
    with pytest.raises(RuntimeError, match="kernel must not require a gradient"):
        x = torch.ones(1, 1, 4, 4, requires_grad=True)
        op(x, torch.ones(3, 3, requires_grad=True), one, one, pad).sum().backward()
