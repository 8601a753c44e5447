"""adain_noise: the kernels against the reference, on CPU and (where present) CUDA."""

import pytest
import torch
import torch.nn.functional as F

from op_testing import (
    DTYPES,
    LOW_PRECISION,
    as_layout,
    assert_cpu_half_is_float32_rounded,
    assert_matches_reference,
    assert_same_layout,
    check_forward,
)
from stylegan_cuda.ops import NoiseAdaIN, adain_noise, adain_noise_reference

# (shape of x, channels_last, with noise): the one list behind every test below.
SAMPLES = [
    ((2, 4, 4, 4), False, True),  # the generator's first block
    ((3, 2, 8, 8), False, False),
    ((2, 5, 7, 9), False, True),  # odd plane: no 16-byte loads on CUDA
    ((2, 5, 7, 9), True, True),
    ((2, 8, 16, 16), True, False),
    ((2, 70, 5, 6), True, True),  # channels_last with a partial block of channels
    ((1, 40, 33, 31), True, True),  # channels_last, batch 1: PyTorch's own instance_norm backward errs here (below)
    ((1, 2, 130, 129), False, True),  # more than one CUDA tile, odd
    ((1, 3, 256, 256), False, True),  # several CUDA tiles
]
IDS = [f"{'x'.join(map(str, s[0]))}{'-cl' if s[1] else ''}{'' if s[2] else '-nonoise'}" for s in SAMPLES]
SMALL = [i for i, s in enumerate(SAMPLES) if s[0][2] * s[0][3] <= 100]  # for the slow float64 checks


def make_inputs(sample, device, dtype, requires_grad=False):
    (n, c, h, w), channels_last, with_noise = sample
    x = as_layout(torch.randn(n, c, h, w, device=device, dtype=dtype), channels_last)
    noise = torch.randn(n, 1, h, w, device=device, dtype=dtype) if with_noise else None
    noise_weight = torch.randn(c, device=device, dtype=dtype)
    gamma = 1 + 0.5 * torch.randn(n, c, device=device, dtype=dtype)
    beta = torch.randn(n, c, device=device, dtype=dtype)
    inputs = (x, noise, noise_weight, gamma, beta)
    for t in inputs:
        if t is not None:
            t.requires_grad_(requires_grad)
    return inputs


def leaves_of(inputs):
    return [t for t in inputs if t is not None]


def run_extension(*args, **kwargs):
    return adain_noise(*args, impl="extension", **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_forward_matches_reference(sample, device, dtype):
    inputs = make_inputs(sample, device, dtype)
    assert check_forward(run_extension, adain_noise_reference, inputs, dtype).shape == inputs[0].shape


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_cpu_half_types_are_float32_rounded(sample, dtype):
    assert_cpu_half_is_float32_rounded(run_extension, make_inputs(sample, "cpu", dtype))


def contiguous_copies(inputs):
    return tuple(None if t is None else t.detach().contiguous().requires_grad_(t.requires_grad) for t in inputs)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_backward_matches_reference(sample, device):
    inputs = make_inputs(sample, device, torch.float32, requires_grad=True)
    grad_out = torch.randn_like(inputs[0])
    # Without noise, noise_weight takes no part: no gradient from either.
    grads = dict(allow_unused=True, materialize_grads=True)
    got = torch.autograd.grad(run_extension(*inputs), leaves_of(inputs), grad_out, **grads)
    # The reference runs on contiguous copies: F.instance_norm's CPU backward is wrong for channels_last x and
    # grad_out with batch 1 (torch 2.11 and 2.14.1; see test_channels_last_batch_one_gradients_are_right).
    reference_inputs = contiguous_copies(inputs)
    want = torch.autograd.grad(adain_noise_reference(*reference_inputs), leaves_of(reference_inputs),
                               grad_out.contiguous(), **grads)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    assert_same_layout(got[0], inputs[0])


def test_channels_last_batch_one_gradients_are_right(device):
    """Where F.instance_norm's CPU backward errs (channels_last, batch 1: the reference and the seed inherit it), the
    kernel agrees with the reference run on contiguous float64 copies."""
    inputs = make_inputs(((1, 70, 5, 6), True, True), device, torch.float64, requires_grad=True)
    grad_out = torch.randn_like(inputs[0])
    got = torch.autograd.grad(run_extension(*inputs), inputs, grad_out)
    reference_inputs = contiguous_copies(inputs)
    want = torch.autograd.grad(adain_noise_reference(*reference_inputs), reference_inputs, grad_out.contiguous())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("wrt", [0, 1], ids=["x", "noise"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_backward_is_as_good_as_the_reference(device, dtype, channels_last, wrt):
    inputs = make_inputs(((2, 5, 7, 9), channels_last, True), device, dtype, requires_grad=True)
    grad_out = torch.randn_like(inputs[0])

    def grad_of(fn, *tensors):
        tensors = [t.detach().requires_grad_() for t in tensors]
        return torch.autograd.grad(fn(*tensors), tensors[wrt], grad_out.to(tensors[0].dtype))[0]

    assert_matches_reference(grad_of(run_extension, *inputs), lambda *t: grad_of(adain_noise_reference, *t), inputs)


@pytest.mark.parametrize("sample", [SAMPLES[i] for i in SMALL], ids=[IDS[i] for i in SMALL])
def test_gradcheck(sample, device):
    inputs = make_inputs(sample, device, torch.float64, requires_grad=True)
    with torch.no_grad():  # keep the pre-activations away from the kink at 0, where finite differences fail
        x, noise, noise_weight = inputs[:3]
        pre = x + (noise_weight.view(1, -1, 1, 1) * noise if noise is not None else 0)
        x += 0.1 * torch.sign(pre)
    with_noise = noise is not None

    def fn(*leaves):
        x, rest = leaves[0], list(leaves[1:])
        noise = rest.pop(0) if with_noise else None
        return run_extension(x, noise, *rest)

    assert torch.autograd.gradcheck(fn, leaves_of(inputs))


def test_double_backward_raises(device):
    inputs = make_inputs(SAMPLES[0], device, torch.float64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(run_extension(*inputs).square().sum(), inputs[0], create_graph=True)
    with pytest.raises(RuntimeError, match="double backward of adain_noise is not supported"):
        grad_x.sum().backward()


@pytest.mark.parametrize("sample, permuted", [(SAMPLES[i], False) for i in (0, 3, 4)] + [(SAMPLES[2], True)],
                         ids=[IDS[i] for i in (0, 3, 4)] + [IDS[2] + "-permuted"])
def test_opcheck(sample, permuted, device):
    """Permuted: x dense in memory but in neither format (channels outermost); the outputs keep its layout."""
    x, noise, noise_weight, gamma, beta = make_inputs(sample, device, torch.float32)
    if permuted:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    inputs = tuple(t if t is None else t.detach().requires_grad_() for t in (x, noise, noise_weight, gamma, beta))
    torch.library.opcheck(torch.ops.stylegan_cuda.adain_noise.default, (*inputs, 0.2, 1e-5))
    _, mean, rstd = torch.ops.stylegan_cuda.adain_noise(x, noise, noise_weight, gamma, beta, 0.2, 1e-5)
    torch.library.opcheck(torch.ops.stylegan_cuda.adain_noise_backward.default,
                          (torch.randn_like(x), x, noise, noise_weight, gamma, mean, rstd, 0.2))


def test_saved_statistics(device):
    """The op's extra outputs: the mean of h - h[0] and 1 / sqrt(var + eps), per plane, in float32."""
    x, noise, noise_weight, gamma, beta = make_inputs(SAMPLES[2], device, torch.bfloat16)
    _, mean, rstd = torch.ops.stylegan_cuda.adain_noise(x, noise, noise_weight, gamma, beta, 0.2, 1e-5)
    h = F.leaky_relu(x.float() + noise_weight.float().view(1, -1, 1, 1) * noise.float(), 0.2)
    assert mean.dtype == rstd.dtype == torch.float32
    torch.testing.assert_close(mean, (h - h[:, :, :1, :1]).mean((2, 3)))
    torch.testing.assert_close(rstd, (h.var((2, 3), unbiased=False) + 1e-5).rsqrt())


@pytest.mark.parametrize("sample", [SAMPLES[0], SAMPLES[3]], ids=[IDS[0], IDS[3]])
def test_compiles_without_graph_break(sample, device):
    inputs = make_inputs(sample, device, torch.float32, requires_grad=True)

    def fn(x, noise, noise_weight, gamma, beta):
        return run_extension(x * 2, noise, noise_weight, gamma, beta).square().sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*inputs), leaves_of(inputs))
    want = torch.autograd.grad(fn(*inputs), leaves_of(inputs))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_compiles_with_inductor(device):
    x, noise, noise_weight, gamma, beta = make_inputs(SAMPLES[0], device, torch.float32)
    fn = torch.compile(lambda x: run_extension(x + 1, noise, noise_weight, gamma, beta) * 3, fullgraph=True)
    torch.testing.assert_close(fn(x), adain_noise_reference(x + 1, noise, noise_weight, gamma, beta) * 3)


@pytest.mark.parametrize("dtype, eps", [(torch.float32, 0.5), (torch.float64, 0.5), (torch.float64, 1e-300)])
def test_eps_reaches_both_implementations(dtype, eps, device):
    """A non-default eps (for float64 inputs, one below float32's range) gives the kernels the reference's output."""
    inputs = make_inputs(SAMPLES[0], device, dtype)
    torch.testing.assert_close(run_extension(*inputs, eps=eps), adain_noise_reference(*inputs, eps=eps))


@pytest.mark.parametrize("size", [4, 64, 256])
@pytest.mark.parametrize("channels_last", [False, True])
def test_large_mean_small_spread(device, size, channels_last):
    """No catastrophic cancellation: mean 1e4, std 1e-2 in float32 matches the float64 reference.

    (Without noise: x + w * noise would round to float32's spacing near 1e4 before any statistics.)"""
    x = as_layout(1e4 + 1e-2 * torch.randn(2, 3, size, size, device=device), channels_last)
    noise_weight = torch.zeros(3, device=device)
    gamma, beta = torch.ones(2, 3, device=device), torch.zeros(2, 3, device=device)
    out = run_extension(x, None, noise_weight, gamma, beta)
    want = adain_noise_reference(x.double(), None, noise_weight.double(), gamma.double(), beta.double())
    torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=0)


def test_constant_and_single_pixel_planes(device):
    """Zero variance gives beta (the reference's answer), not NaN, down to 1x1 planes where the reference raises."""
    beta = torch.randn(2, 3, device=device)
    gamma = torch.randn(2, 3, device=device)
    constant = torch.full((2, 3, 4, 4), 5.0, device=device)
    no_weight = torch.zeros(3, device=device)
    out = run_extension(constant, None, no_weight, gamma, beta)
    assert torch.equal(out, beta[:, :, None, None].expand_as(out))  # exact: h - h[0] is 0
    # The reference's float32 mean rounds; 1 / sqrt(eps) then magnifies the rounding.
    torch.testing.assert_close(out, adain_noise_reference(constant, None, no_weight, gamma, beta), atol=1e-4, rtol=0)
    x = torch.randn(2, 3, 1, 1, device=device, requires_grad=True)
    g = gamma.clone().requires_grad_()
    b = beta.clone().requires_grad_()
    out = run_extension(x, None, no_weight, g, b)
    torch.testing.assert_close(out, beta[:, :, None, None].expand_as(out))
    grad_x, grad_gamma, grad_beta = torch.autograd.grad(out.sum(), (x, g, b))
    assert torch.equal(grad_x, torch.zeros_like(x)) and torch.equal(grad_gamma, torch.zeros_like(gamma))
    torch.testing.assert_close(grad_beta, torch.ones_like(beta))


def test_gradient_reaches_noise_only_when_asked(device):
    x, noise, noise_weight, gamma, beta = make_inputs(SAMPLES[0], device, torch.float32)
    noise.requires_grad_()
    (got,) = torch.autograd.grad(run_extension(x, noise, noise_weight, gamma, beta).sum(), noise)
    (want,) = torch.autograd.grad(adain_noise_reference(x, noise, noise_weight, gamma, beta).sum(), noise)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_empty_and_non_dense_inputs(device):
    empty = torch.randn(0, 3, 4, 4, device=device)
    assert run_extension(empty, None, torch.zeros(3, device=device), torch.ones(0, 3, device=device),
                         torch.zeros(0, 3, device=device)).shape == empty.shape
    x = torch.randn(2, 6, 9, 9, device=device)[:, ::2, :, 1:]
    noise = torch.randn(2, 1, 9, 16, device=device)[..., ::2]
    args = (x, noise, torch.randn(3, device=device), torch.randn(2, 3, device=device), torch.randn(2, 3, device=device))
    torch.testing.assert_close(run_extension(*args), adain_noise_reference(*args))


def good_args(**changes):
    args = {"x": torch.randn(2, 3, 4, 5), "noise": torch.randn(2, 1, 4, 5), "noise_weight": torch.randn(3),
            "gamma": torch.randn(2, 3), "beta": torch.randn(2, 3)}
    args.update(changes)
    return args


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"x": torch.randn(2, 3, 4)}, ValueError, r"x must have shape \[N, C, H, W\], got rank 3"),
        ({"noise": torch.randn(2, 3, 4, 5)}, ValueError, r"noise must have shape \[2, 1, 4, 5\]"),
        ({"noise": torch.randn(2, 1, 5, 4)}, ValueError, r"noise must have shape \[2, 1, 4, 5\]"),
        ({"noise_weight": torch.randn(2)}, ValueError, r"noise_weight must have shape \[3\]"),
        ({"gamma": torch.randn(3)}, ValueError, r"gamma must have shape \[2, 3\]"),
        ({"beta": torch.randn(1, 3)}, ValueError, r"beta must have shape \[2, 3\]"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
        ({"eps": 1e-60}, ValueError, "eps must be >= 1.175e-38"),
        ({"gamma": torch.randn(2, 3, dtype=torch.float64)}, TypeError, "gamma must have the dtype of x"),
        ({"noise": torch.randn(2, 1, 4, 5, device="meta")}, ValueError, "noise must be on the device of x"),
        ({"x": torch.ones(2, 3, 4, 5, dtype=torch.long)}, TypeError, "x must be a floating-point tensor"),
    ],
)
def test_bad_arguments(changes, error, match):
    for impl in ("extension", "reference"):
        with pytest.raises(error, match=match):
            adain_noise(**good_args(**changes), impl=impl)


def test_kernel_checks_its_arguments():
    """The registered ops validate on their own, for callers that reach them through torch.ops."""
    args = good_args()
    ops = torch.ops.stylegan_cuda
    with pytest.raises(RuntimeError, match=r"gamma must have shape \[2, 3\]"):
        ops.adain_noise(args["x"], args["noise"], args["noise_weight"], torch.ones(3, 2), args["beta"], 0.2, 1e-5)
    with pytest.raises(RuntimeError, match="eps must be > 0"):
        ops.adain_noise(*args.values(), 0.2, -1.0)
    with pytest.raises(RuntimeError, match="eps must be >= 1.17549e-38"):
        ops.adain_noise(*args.values(), 0.2, 1e-60)
    with pytest.raises(RuntimeError, match="beta must be on the same device as x"):
        ops.adain_noise(*list(args.values())[:4], args["beta"].to("meta"), 0.2, 1e-5)
    with pytest.raises(RuntimeError, match="noise must have the same dtype as x"):
        ops.adain_noise(args["x"], args["noise"].double(), *list(args.values())[2:], 0.2, 1e-5)
    _, mean, rstd = ops.adain_noise(*args.values(), 0.2, 1e-5)
    with pytest.raises(RuntimeError, match="mean must be a Float tensor"):
        ops.adain_noise_backward(args["x"], args["x"], args["noise"], args["noise_weight"], args["gamma"],
                                 mean.double(), rstd, 0.2)
    with pytest.raises(RuntimeError, match=r"grad_y must have shape \[2, 3, 4, 5\]"):
        ops.adain_noise_backward(args["x"][:1], args["x"], args["noise"], args["noise_weight"], args["gamma"], mean,
                                 rstd, 0.2)


def seed_style_layers(module: NoiseAdaIN, x, style, noise):
    """The seed's NoiseInjection -> LeakyReLU(0.2) -> AdaptiveInstanceNorm with the module's parameters."""
    out = x + module.noise_weight.view(1, -1, 1, 1) * module.noise_gain * noise
    out = F.leaky_relu(out, 0.2)
    gamma, beta = F.linear(style, module.style_weight * module.style_gain, module.style_bias).chunk(2, 1)
    return gamma[:, :, None, None] * torch.nn.InstanceNorm2d(x.shape[1])(out) + beta[:, :, None, None]


def test_module_matches_seed_layers(device):
    module = NoiseAdaIN(8, 16, impl="extension").to(device)
    assert torch.equal(module.noise_weight, torch.zeros(8, device=device))
    assert torch.equal(module.style_bias[:8], torch.ones(8, device=device))
    assert torch.equal(module.style_bias[8:], torch.zeros(8, device=device))
    with torch.no_grad():
        module.noise_weight.normal_()
    x, style, noise = (torch.randn(2, 8, 6, 6, device=device), torch.randn(2, 16, device=device),
                       torch.randn(2, 1, 6, 6, device=device))
    torch.testing.assert_close(module(x, style, noise), seed_style_layers(module, x, style, noise))
    got = torch.autograd.grad(module(x, style, noise).square().sum(), list(module.parameters()))
    want = torch.autograd.grad(seed_style_layers(module, x, style, noise).square().sum(), list(module.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
