"""fused_bias_leaky_relu: the kernels against the reference, on CPU and (where present) CUDA."""

import math

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
from stylegan_cuda.ops import FusedLeakyReLU, fused_bias_leaky_relu, fused_bias_leaky_relu_reference

# (shape of x, channels_last, with bias, negative_slope, scale): the one list behind every test below.
SAMPLES = [
    ((4, 512), False, True, 0.2, math.sqrt(2)),  # mapping network
    ((3, 17), False, False, 0.2, 1.0),
    ((1, 1), False, True, 0.0, 2.0),
    ((2, 8, 5, 7), False, True, 0.2, math.sqrt(2)),
    ((2, 8, 5, 7), True, True, 0.2, math.sqrt(2)),
    ((2, 3, 1, 1), True, False, 0.1, 1.0),
    ((1, 3, 17), False, True, 0.2, 1.0),  # rank 3
    ((2, 16, 8, 8), True, True, 0.2, 1.0),
    ((2, 8, 8, 8), False, True, 0.2, math.sqrt(2)),  # planes of whole mask words: the fused bias-gradient sums
    ((3, 5, 4, 4), False, True, 0.2, 1.0),  # 16-element planes: a mask word spans two channels
    ((2, 40, 3, 11), True, True, 0.2, 1.0),  # channels innermost, 40 of them: words wrap around the channels
]
IDS = [f"{'x'.join(map(str, s[0]))}{'-cl' if s[1] else ''}{'' if s[2] else '-nobias'}" for s in SAMPLES]


def make_inputs(sample, device, dtype, requires_grad=False):
    shape, channels_last, with_bias, slope, scale = sample
    x = torch.randn(shape, device=device, dtype=dtype)
    if channels_last:
        x = as_layout(x, True)
    bias = torch.randn(shape[1], device=device, dtype=dtype) if with_bias else None
    x.requires_grad_(requires_grad)
    if bias is not None:
        bias.requires_grad_(requires_grad)
    return (x, bias, slope, scale)


def run_extension(x, bias, slope, scale):
    return fused_bias_leaky_relu(x, bias, slope, scale, impl="extension")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_forward_matches_reference(sample, device, dtype):
    inputs = make_inputs(sample, device, dtype)
    assert check_forward(run_extension, fused_bias_leaky_relu_reference, inputs, dtype).shape == inputs[0].shape


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_cpu_half_types_are_float32_rounded(sample, dtype):
    assert_cpu_half_is_float32_rounded(run_extension, make_inputs(sample, "cpu", dtype))


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_backward_matches_reference(sample, device):
    inputs = make_inputs(sample, device, torch.float32, requires_grad=True)
    leaves = [t for t in inputs[:2] if t is not None]
    grad_out = torch.randn_like(inputs[0])
    got = torch.autograd.grad(run_extension(*inputs), leaves, grad_out)
    want = torch.autograd.grad(fused_bias_leaky_relu_reference(*inputs), leaves, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    assert_same_layout(got[0], inputs[0])


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_gradcheck_and_gradgradcheck(sample, device):
    x, bias, slope, scale = make_inputs(sample, device, torch.float64, requires_grad=True)
    # Keep x + bias away from the kink at 0, where finite differences are meaningless.
    with torch.no_grad():
        x += 0.05 * torch.sign(x + (bias.view(1, -1, *[1] * (x.dim() - 2)) if bias is not None else 0))
    leaves = (x, bias) if bias is not None else (x,)

    def fn(*leaves):
        return run_extension(leaves[0], leaves[1] if len(leaves) > 1 else None, slope, scale)

    assert torch.autograd.gradcheck(fn, leaves)
    assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.parametrize("penalized", ["grad_x", "grad_bias", "both"])
@pytest.mark.parametrize("sample", [SAMPLES[4], SAMPLES[8]], ids=[IDS[4], IDS[8]])
def test_second_order_through_either_gradient(sample, penalized, device):
    """A penalty on the first gradients (of x, of the bias, or both), differentiated again, as the reference does."""
    x, bias, slope, scale = make_inputs(sample, device, torch.float32, requires_grad=True)
    grad_out = torch.randn_like(x, requires_grad=True)
    results = []
    for fn in (run_extension, fused_bias_leaky_relu_reference):
        grad_x, grad_bias = torch.autograd.grad(fn(x, bias, slope, scale), (x, bias), grad_out, create_graph=True)
        terms = {"grad_x": [grad_x], "grad_bias": [grad_bias], "both": [grad_x, grad_bias]}[penalized]
        penalty = sum(t.square().sum() for t in terms)
        results.append(torch.autograd.grad(penalty, (grad_out, x), allow_unused=True, materialize_grads=True))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_opcheck(sample, device):
    torch.library.opcheck(torch.ops.stylegan_cuda.bias_act.default, make_inputs(sample, device, torch.float32, True))
    x, bias, slope, scale = make_inputs(sample, device, torch.float32)
    y, positive = torch.ops.stylegan_cuda.bias_act(x, bias, slope, scale)
    for bias_grad in (False, True):
        torch.library.opcheck(torch.ops.stylegan_cuda.bias_act_backward.default,
                              (torch.randn_like(y).requires_grad_(), positive, y.stride(), slope, scale, bias_grad))


def test_cpu_tasks_that_start_inside_a_plane():
    """The CPU threads split the mask words anywhere, inside a plane too: each task finds its plane's bias itself."""
    x = torch.randn(1, 3, 112, 200, requires_grad=True)  # 2100 words, planes of 700: two threads split at word 1050
    bias = torch.randn(3, requires_grad=True)
    got = run_extension(x, bias, 0.2, 1.0)
    want = fused_bias_leaky_relu_reference(x, bias, 0.2, 1.0)
    torch.testing.assert_close(got, want)
    grad_out = torch.randn_like(x)
    for g, w in zip(torch.autograd.grad(got, (x, bias), grad_out), torch.autograd.grad(want, (x, bias), grad_out)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4)  # bias: sums of 22400 terms, in another order


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_sign_bits_follow_memory_order(sample, device):
    """The mask the backward pass reads: bit i % 32 of word i / 32 is set where x + bias > 0, i in y's memory order."""
    x, bias, slope, scale = make_inputs(sample, device, torch.float32)
    y, positive = torch.ops.stylegan_cuda.bias_act(x, bias, slope, scale)
    shifted = x + (bias.view(1, -1, *[1] * (x.dim() - 2)) if bias is not None else 0)
    assert shifted.stride() == y.stride()
    in_memory_order = torch.as_strided(shifted, (y.numel(),), (1,))
    bits = (positive.view(-1, 1).long() >> torch.arange(32, device=device)) & 1
    torch.testing.assert_close(bits.flatten()[: y.numel()].bool(), in_memory_order > 0)
    assert not bits.flatten()[y.numel():].any()


@pytest.mark.parametrize("sample", [SAMPLES[4], SAMPLES[8]], ids=[IDS[4], IDS[8]])
def test_backward_with_grad_in_another_layout(sample, device):
    x, bias, slope, scale = make_inputs(sample, device, torch.float32, requires_grad=True)
    grads = {
        "other layout": torch.randn_like(x, memory_format=torch.contiguous_format if x.stride(1) == 1
                                         else torch.channels_last),
        "expanded": torch.randn(1, device=device).expand(x.shape),
    }
    for name, grad_out in grads.items():
        got = torch.autograd.grad(run_extension(x, bias, slope, scale), (x, bias), grad_out)
        want = torch.autograd.grad(fused_bias_leaky_relu_reference(x, bias, slope, scale), (x, bias), grad_out)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, msg=lambda m: f"{name}: {m}")
        assert_same_layout(got[0], x)


@pytest.mark.parametrize("sample", [SAMPLES[0], SAMPLES[4]], ids=[IDS[0], IDS[4]])
def test_compiles_without_graph_break(sample, device):
    x, bias, slope, scale = make_inputs(sample, device, torch.float32, requires_grad=True)

    def fn(x, bias):
        return run_extension(x * 2, bias, slope, scale).square().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x, bias), x)[0]
    want = torch.autograd.grad(fn(x, bias), x)[0]
    torch.testing.assert_close(got, want)


def test_compiles_with_inductor(device):
    x = torch.randn(4, 8, 6, 6, device=device)
    bias = torch.randn(8, device=device)
    fn = torch.compile(lambda x, b: run_extension(x + 1, b, 0.2, 2.0) * 3, fullgraph=True)
    torch.testing.assert_close(fn(x, bias), fused_bias_leaky_relu_reference(x + 1, bias, 0.2, 2.0) * 3)


def test_r1_style_penalty_matches_reference(device):
    """The gradient of a gradient norm, as R1 takes it through the discriminator's activations."""
    x = torch.randn(2, 4, 5, 5, device=device, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 4, 3, 3, device=device, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, device=device, dtype=torch.float64, requires_grad=True)

    def penalty(act):
        out = act(F.conv2d(x, weight, padding=1), bias, 0.2, math.sqrt(2)).square().sum()
        (grad_x,) = torch.autograd.grad(out, x, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), (weight, bias))

    for got, want in zip(penalty(run_extension), penalty(fused_bias_leaky_relu_reference)):
        torch.testing.assert_close(got, want)


def test_empty_nan_and_inf(device):
    empty = torch.randn(0, 5, 3, 3, device=device)
    assert run_extension(empty, torch.zeros(5, device=device), 0.2, 1.0).shape == empty.shape
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 0.0, -1.0]], device=device).T.contiguous()
    torch.testing.assert_close(run_extension(x, None, 0.2, 1.5), fused_bias_leaky_relu_reference(x, None, 0.2, 1.5),
                               equal_nan=True)


def test_one_channel_with_a_zero_stride(device):
    """A dimension of size 1 may carry any stride; the kernels must not take it for the length of a channel's run."""
    x = torch.randn(4, 1, 8, 8, device=device).as_strided((4, 1, 8, 8), (64, 0, 8, 1)).requires_grad_()
    bias = torch.randn(1, device=device, requires_grad=True)
    grad_out = torch.randn(4, 1, 8, 8, device=device)
    got = torch.autograd.grad(run_extension(x, bias, 0.2, 1.0), (x, bias), grad_out)
    want = torch.autograd.grad(fused_bias_leaky_relu_reference(x, bias, 0.2, 1.0), (x, bias), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_non_dense_input(device):
    x = torch.randn(4, 6, 8, 8, device=device)[:, ::2, :, 1:]
    bias = torch.randn(3, device=device)
    torch.testing.assert_close(run_extension(x, bias, 0.2, 1.0), fused_bias_leaky_relu_reference(x, bias, 0.2, 1.0))


@pytest.mark.parametrize(
    "x_shape, bias_shape, kwargs, error, match",
    [
        ((4,), None, {}, ValueError, "rank 2"),
        ((2, 3), (4,), {}, ValueError, r"bias must have shape \[3\]"),
        ((2, 3), (1, 3), {}, ValueError, r"bias must have shape \[3\]"),
        ((2, 3), None, {"negative_slope": -0.1}, ValueError, "negative_slope"),
        ((2, 3), None, {"scale": 0.0}, ValueError, "scale"),
    ],
)
def test_bad_shapes_and_arguments(x_shape, bias_shape, kwargs, error, match):
    x = torch.randn(x_shape)
    bias = torch.randn(bias_shape) if bias_shape else None
    for impl in ("extension", "reference"):
        with pytest.raises(error, match=match):
            fused_bias_leaky_relu(x, bias, impl=impl, **kwargs)


def test_bad_dtypes_and_devices():
    with pytest.raises(TypeError, match="floating-point"):
        fused_bias_leaky_relu(torch.ones(2, 3, dtype=torch.long), impl="extension")
    with pytest.raises(TypeError, match="bias must have the dtype"):
        fused_bias_leaky_relu(torch.ones(2, 3), torch.ones(3, dtype=torch.float64), impl="extension")
    with pytest.raises(ValueError, match="bias must be on the device"):
        fused_bias_leaky_relu(torch.ones(2, 3), torch.ones(3, device="meta"), impl="extension")
    with pytest.raises(ValueError, match="impl must be one of"):
        fused_bias_leaky_relu(torch.ones(2, 3), impl="fast")
    with pytest.raises(ValueError, match="impl='extension' has kernels for CPU and CUDA tensors only, got a meta"):
        fused_bias_leaky_relu(torch.ones(2, 3, device="meta"), impl="extension")


def test_kernel_checks_its_arguments():
    """The registered op validates on its own, for callers that reach it through torch.ops."""
    with pytest.raises(RuntimeError, match=r"bias must have shape \[3\]"):
        torch.ops.stylegan_cuda.bias_act(torch.ones(2, 3), torch.ones(4), 0.2, 1.0)
    with pytest.raises(RuntimeError, match="floating-point"):
        torch.ops.stylegan_cuda.bias_act(torch.ones(2, 3, dtype=torch.int32), None, 0.2, 1.0)
    with pytest.raises(RuntimeError, match="bias must be on the same device as x"):
        torch.ops.stylegan_cuda.bias_act(torch.ones(2, 3), torch.ones(3, device="meta"), 0.2, 1.0)
    backward = torch.ops.stylegan_cuda.bias_act_backward
    _, positive = torch.ops.stylegan_cuda.bias_act(torch.ones(2, 40), None, 0.2, 1.0)
    with pytest.raises(RuntimeError, match=r"positive must be the int32 words \[3\]"):
        backward(torch.ones(2, 40), positive[:2], [40, 1], 0.2, 1.0, False)
    with pytest.raises(RuntimeError, match="positive must be the int32 words"):
        backward(torch.ones(2, 40), positive.float(), [40, 1], 0.2, 1.0, False)
    with pytest.raises(RuntimeError, match="y_strides must describe a dense layout"):
        backward(torch.ones(2, 40), positive, [1, 1], 0.2, 1.0, False)
    with pytest.raises(RuntimeError, match="one stride per dimension"):
        backward(torch.ones(2, 40), positive, [1], 0.2, 1.0, False)
    with pytest.raises(RuntimeError, match="positive must be on the same device as grad"):
        backward(torch.ones(2, 40), positive.to("meta"), [40, 1], 0.2, 1.0, False)


def test_module_matches_seed_style_layer():
    layer = FusedLeakyReLU(8, impl="extension")
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(layer(x), F.leaky_relu(x + layer.bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2))
    assert FusedLeakyReLU(8, bias=False)(x).shape == x.shape
