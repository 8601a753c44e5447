"""The generator and the discriminator: impl="extension" against impl="reference", outputs and every gradient.

Tiny widths (``channel_base=1024, max_channels=8``: 8 channels up to 128 px, then 4, 2, 1) so that every step from
0 (4 px) to 8 (1024 px) runs in seconds on a CPU. That the reference path is the seed's function is tested in
test_checkpoint.py, against an independent re-implementation of the seed (seed_reference.py).
"""

from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch

from stylegan_cuda.models import MAX_STEP, RESOLUTIONS, Discriminator, StyledGenerator, set_impl
from stylegan_cuda.models.layers import DownsampleConv2d, UpsampleConv2d
from stylegan_cuda.ops.build import ExtensionBuildError, load_extension
from stylegan_cuda.train import make_optimizers, r1_penalty, train_step

TINY = dict(channel_base=1024, max_channels=8)
CODE_DIM = 16
BATCH = 2
STEPS = list(range(MAX_STEP + 1))


def _missing_kernels() -> str | None:
    try:
        load_extension()
    except ExtensionBuildError as error:
        return f"the extension does not build: {error}"
    missing = [op for op in ("bias_act", "upfirdn2d", "adain_noise") if not hasattr(torch.ops.stylegan_cuda, op)]
    return f"kernels not in this build: {', '.join(missing)}" if missing else None


MISSING_KERNELS = _missing_kernels()
needs_kernels = pytest.mark.skipif(MISSING_KERNELS is not None, reason=str(MISSING_KERNELS))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter redrawn (noise weights and AdaIN biases included) so that no path is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 0.25)
    return model


def tiny_generator(fused=True, impl="reference", **kwargs) -> StyledGenerator:
    return randomize(StyledGenerator(code_dim=CODE_DIM, n_mlp=2, fused=fused, impl=impl, **TINY, **kwargs))


def tiny_discriminator(fused=True, from_rgb_activate=True, impl="reference") -> Discriminator:
    return randomize(Discriminator(fused=fused, from_rgb_activate=from_rgb_activate, impl=impl, **TINY), seed=1)


def assert_close_scaled(actual, expected, tol=2e-4, what="") -> None:
    """``max |actual - expected| <= tol * max(1, max |expected|)``: float32 agreement at the tensor's own scale."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.abs().max().item())
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:.1g} x {scale:.3g}"


def generator_inputs(step, variant, device="cpu", generator=None):
    """``(args, kwargs)`` of a generator call: latents, noise and one of the styling variants."""
    gen = torch.Generator().manual_seed(100 + step)
    z = [torch.randn(BATCH, CODE_DIM, generator=gen).to(device) for _ in range(2)]
    noise = [torch.randn(BATCH, 1, r, r, generator=gen).to(device) for r in RESOLUTIONS[: step + 1]]
    kwargs = {"noise": noise}
    if variant == "one":
        return (z[0],), kwargs
    if variant == "mixing":
        return (z,), {**kwargs, "mixing_range": (0, max(step - 1, 0))}
    if variant == "truncation":
        mean_style = generator.mean_style(torch.randn(64, CODE_DIM, generator=gen).to(device)).detach()
        return (z[0],), {**kwargs, "mean_style": mean_style, "style_weight": 0.7}
    raise ValueError(variant)


def cast(value, like: torch.nn.Module):
    """``value`` with every floating-point tensor in it (lists, tuples, dicts) on ``like``'s dtype and device."""
    if isinstance(value, torch.Tensor):
        param = next(like.parameters())
        return value.to(param.device, param.dtype) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(cast(v, like) for v in value)
    if isinstance(value, dict):
        return {k: cast(v, like) for k, v in value.items()}
    return value


def _parameter_grads(loss, model, create_graph=False):
    """Every parameter's gradient; zeros where the loss does not reach it. (An R1 penalty reaches the biases behind the
    discriminator's last activations only through the sign of their input: the reference passes a zero gradient
    along, the extension's backward, which reads sign bits, leaves them out of the graph. Zero either way.)"""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True, materialize_grads=True,
                                create_graph=create_graph)
    return {n: g.detach() for (n, _), g in zip(named, grads)}


def projected(call):
    """A run: ``call(model)``'s output and (with ``grads``) the parameter gradients of a fixed random projection of
    it."""
    def run(model, grads=True):
        out = call(model)
        if not grads:
            return {"output": out.detach()}
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out)
        return {"output": out.detach(), **_parameter_grads((out * weights).sum(), model)}
    return run


def assert_same_function(model, run, device="cpu", tol=2e-4, tol64=1e-10):
    """``run`` with impl="extension" equals it with impl="reference", tensor by tensor, at each tensor's scale: the
    forward values in float32, to ``tol``; everything, gradients included, in float64, to ``tol64``.

    Gradients are not compared in float32: planes of up to a million pixels hold pre-activations within float32
    rounding of a leaky ReLU's kink, where two correct implementations (or float32 and float64 runs of one) take
    different slopes, so a gradient may differ by a whole term of its sum, by chance.
    """
    for dtype, tolerance, grads in ((torch.float32, tol, False), (torch.float64, tol64, True)):
        reference = run(set_impl(copy.deepcopy(model), "reference").to(device, dtype), grads=grads)
        extension = run(set_impl(copy.deepcopy(model), "extension").to(device, dtype), grads=grads)
        assert extension.keys() == reference.keys()
        for name, expected in reference.items():
            assert_close_scaled(extension[name], expected, tolerance, f"{name} ({dtype})")


# One latent with a fade-in, two latents mixed at a fixed range, truncation; fused and not (from 128 px up).
# Above 64 px (steps 5-8, slow on a CPU) two of the three per step, alternating.
GENERATOR_VARIANTS = (("one", 0.5, True), ("mixing", 1.0, False), ("truncation", 0.3, False), ("truncation", 1.0, True))
GENERATOR_CASES = [(step, *GENERATOR_VARIANTS[k]) for step in STEPS
                   for k in ((0, 1, 2) if step <= 4 else ((0, 2) if step % 2 else (1, 3)))]


@needs_kernels
@pytest.mark.parametrize("step,variant,alpha,fused", GENERATOR_CASES,
                         ids=[f"step{s}-{v}-a{a}-{'fused' if f else 'nearest'}" for s, v, a, f in GENERATOR_CASES])
def test_generator_extension_matches_reference(step, variant, alpha, fused, device):
    generator = tiny_generator(fused)
    args, kwargs = generator_inputs(step, variant, generator=generator)
    assert_same_function(generator, projected(lambda g: g(*cast(args, g), step=step, alpha=alpha, **cast(kwargs, g))),
                         device)


# A fade-in and alpha = 1, fused (from 128 px up) and average-pooled, from-RGB with and without activation.
# Above 128 px (steps 6-8, slow on a CPU) one of the two per step, alternating.
DISCRIMINATOR_VARIANTS = ((0.5, True, True), (1.0, False, False), (1.0, True, True), (0.5, False, True))
DISCRIMINATOR_CASES = [(step, *DISCRIMINATOR_VARIANTS[k]) for step in STEPS
                       for k in (((0, 1) if step % 2 else (2, 3)) if step <= 5 else (step % 4,))]


def r1_run(x, step, alpha):
    """A run: the scores and (with ``grads``) their gradient with respect to the input and the R1 penalty's parameter
    gradients."""
    def run(discriminator, grads=True):
        real = cast(x, discriminator).requires_grad_(True)
        scores = discriminator(real, step=step, alpha=alpha)
        if not grads:
            return {"scores": scores.detach()}
        (grad_x,) = torch.autograd.grad(scores.sum(), real, create_graph=True)
        penalty = r1_penalty(scores, real)
        return {"scores": scores.detach(), "grad_x": grad_x.detach(), **_parameter_grads(penalty, discriminator)}
    return run


@needs_kernels
@pytest.mark.parametrize("step,alpha,fused,activate", DISCRIMINATOR_CASES,
                         ids=[f"step{s}-a{a}-{'fused' if f else 'pooled'}-{'act' if r else 'linear'}rgb"
                              for s, a, f, r in DISCRIMINATOR_CASES])
def test_discriminator_extension_matches_reference(step, alpha, fused, activate, device):
    discriminator = tiny_discriminator(fused, activate)
    size = RESOLUTIONS[step]
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(step))
    assert_same_function(discriminator, projected(lambda d: d(cast(x, d), step=step, alpha=alpha)), device)
    assert_same_function(discriminator, r1_run(x, step, alpha), device)


@pytest.mark.parametrize("impl", ["reference", pytest.param("extension", marks=needs_kernels)])
def test_random_crossover_matches_explicit_range(impl):
    """Mixing regularization: the crossover the seed draws with Python's random, replayed as a mixing_range."""
    generator = tiny_generator(impl=impl)
    step = 4
    z = [torch.randn(BATCH, CODE_DIM), torch.randn(BATCH, CODE_DIM)]
    noise = generator.make_noise(BATCH, step)
    random.seed(3)
    crossover = random.sample(range(step), 1)[0]
    random.seed(3)
    mixed = generator(z, noise=noise, step=step)
    explicit = generator(z, noise=noise, step=step, mixing_range=(crossover + 1, MAX_STEP))
    torch.testing.assert_close(mixed, explicit)
    assert not torch.allclose(mixed, generator(z[0], noise=noise, step=step))
    # Training mixes from its first step: at 4 px there is one block and no crossover to draw, so the first latent's.
    torch.testing.assert_close(generator(z, noise=noise[:1], step=0), generator(z[0], noise=noise[:1], step=0))


def test_generator_shapes_widths_and_defaults():
    generator = StyledGenerator(impl="reference")
    widths = [block.adain1.channels for block in generator.synthesis.blocks]
    assert widths == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    upsampling = [block.upsample for block in generator.synthesis.blocks]
    assert upsampling == [None] + ["nearest"] * 4 + ["fused"] * 4
    assert [b.upsample for b in StyledGenerator(fused=False, **TINY).synthesis.blocks][5:] == ["nearest"] * 4
    small = tiny_generator()
    for step in (0, 3):
        image = small(torch.randn(3, CODE_DIM), step=step)
        assert image.shape == (3, 3, RESOLUTIONS[step], RESOLUTIONS[step])
    assert small.mean_style(torch.randn(10, CODE_DIM)).shape == (1, CODE_DIM)
    # No mapping layers: the styles are the pixel-normalized latents.
    z = torch.randn(5, CODE_DIM)
    no_mapping = StyledGenerator(code_dim=CODE_DIM, n_mlp=0, impl="reference", **TINY)
    normalized = z / z.square().mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(no_mapping.mean_style(z), normalized.mean(0, keepdim=True))


def test_discriminator_widths():
    discriminator = Discriminator(impl="reference")
    assert [rgb.weight.shape[0] for rgb in discriminator.from_rgb] == [16, 32, 64, 128, 256, 512, 512, 512, 512]
    assert [block.fused for block in discriminator.blocks[:MAX_STEP]] == [True] * 4 + [False] * 4
    assert discriminator.blocks[MAX_STEP].conv1.weight.shape == (512, 513, 3, 3)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 8)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("layer", ["upsample", "downsample"])
def test_folded_convolutions_equal_the_seeds_two_steps(layer, channels_last, size):
    """The stride-2 forms of nearest upsampling + convolution and of convolution + average pooling (any impl but
    "reference") against the seed's two steps, with the bias, odd and 1-pixel sizes included."""
    if layer == "upsample":
        module = randomize(UpsampleConv2d(3, 5, impl="reference"))
    else:
        module = randomize(DownsampleConv2d(3, 5, pooled=True, impl="reference"))
        size = (2 * size[0], 2 * size[1] + 1)  # pooling drops the odd last column
    module = module.double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    run = projected(lambda m: m(x))
    seed, folded = run(module), run(set_impl(copy.deepcopy(module), "auto"))
    for name in seed:
        assert_close_scaled(folded[name], seed[name], 1e-12, name)


def test_a_model_built_on_the_meta_device_loads_to_the_same_function():
    """Built on the meta device, materialized with to_empty and loaded: the model holds no state outside its state
    dict (the folded convolutions' widening included)."""
    generator, discriminator = tiny_generator(fused=False, impl="auto"), tiny_discriminator(fused=False, impl="auto")
    with torch.device("meta"):
        meta_generator = StyledGenerator(code_dim=CODE_DIM, n_mlp=2, fused=False, impl="auto", **TINY)
        meta_discriminator = Discriminator(fused=False, impl="auto", **TINY)
    meta_generator.to_empty(device="cpu").load_state_dict(generator.state_dict())
    meta_discriminator.to_empty(device="cpu").load_state_dict(discriminator.state_dict())
    z, noise = torch.randn(BATCH, CODE_DIM), generator.make_noise(BATCH, 3)
    image = generator(z, noise=noise, step=3)
    torch.testing.assert_close(meta_generator(z, noise=noise, step=3), image, rtol=0, atol=0)
    torch.testing.assert_close(meta_discriminator(image, step=3), discriminator(image, step=3), rtol=0, atol=0)


def test_bad_arguments():
    generator, discriminator = tiny_generator(), tiny_discriminator()
    with pytest.raises(ValueError, match="step"):
        generator(torch.randn(1, CODE_DIM), step=9)
    with pytest.raises(ValueError, match="noise maps"):
        generator(torch.randn(1, CODE_DIM), noise=[torch.randn(1, 1, 4, 4)], step=1)
    latent = rf"latent 0 must be a floating-point tensor \[N, {CODE_DIM}\]"
    for bad in (torch.randn(2, CODE_DIM + 1), torch.randn(CODE_DIM), torch.ones(2, CODE_DIM, dtype=torch.long)):
        with pytest.raises(ValueError, match=latent):
            generator(bad, step=1)
    with pytest.raises(ValueError, match=latent):
        generator.mean_style(torch.randn(4, CODE_DIM + 1))
    with pytest.raises(ValueError, match="non-empty list"):
        generator([], step=1)
    with pytest.raises(ValueError, match="latent 0 has 2, latent 1 has 3"):
        generator([torch.randn(2, CODE_DIM), torch.randn(3, CODE_DIM)], step=1, mixing_range=(0, 1))
    with pytest.raises(ValueError, match=rf"mean_style must have shape \[1, {CODE_DIM}\]"):
        generator(torch.randn(2, CODE_DIM), step=1, mean_style=torch.randn(CODE_DIM + 1), style_weight=0.7)
    for image in (torch.randn(1, 3, 16, 16), torch.randn(1, 4, 8, 8)):
        with pytest.raises(ValueError, match=r"\[N, 3, 8, 8\]"):
            discriminator(image, step=1)
    with pytest.raises(ValueError, match="batch must be an int >= 0, got -1"):
        generator.make_noise(-1, 1)
    with pytest.raises(ValueError, match="channel_base"):
        StyledGenerator(channel_base=512, max_channels=8)
    with pytest.raises(ValueError, match="max_channels must be >= 1"):
        Discriminator(channel_base=1024, max_channels=0)
    with pytest.raises(ValueError, match="code_dim must be >= 1 .* got code_dim=0"):
        StyledGenerator(code_dim=0, **TINY)
    with pytest.raises(ValueError, match="n_mlp >= 0, got code_dim=512, n_mlp=-1"):
        StyledGenerator(n_mlp=-1, **TINY)
    with pytest.raises(ValueError, match="impl"):
        Discriminator(impl="cuda", **TINY)


def _autocast_run(impl, dtype, device):
    generator = tiny_generator(impl=impl).to(device)
    discriminator = tiny_discriminator(impl=impl).to(device)
    args, kwargs = generator_inputs(3, "one", device)
    with torch.autocast(device_type=device, dtype=dtype):
        image = generator(*args, step=3, alpha=0.5, **kwargs)
        scores = discriminator(image, step=3, alpha=0.5)
    scores.float().sum().backward()
    return image.float(), scores.float(), generator.synthesis.blocks[1].conv1.weight.grad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", ["reference", pytest.param("extension", marks=needs_kernels)])
def test_autocast(impl, dtype, device):
    image, scores, grad = _autocast_run(impl, dtype, device)
    reference = tiny_generator(impl="reference").to(device)
    args, kwargs = generator_inputs(3, "one", device)
    expected = reference(*args, step=3, alpha=0.5, **kwargs)
    assert torch.isfinite(image).all() and torch.isfinite(scores).all() and torch.isfinite(grad).all()
    # Low precision through 8 normalized layers: agreement to a few percent of the image's scale.
    assert_close_scaled(image, expected, tol=0.1, what=f"{dtype} image")


@needs_kernels
def test_channels_last(device):
    generator = tiny_generator(impl="extension").to(device)
    discriminator = tiny_discriminator(impl="extension").to(device)
    args, kwargs = generator_inputs(3, "one", device)
    image = generator(*args, step=3, alpha=0.5, **kwargs)
    scores = discriminator(image, step=3, alpha=0.5)
    generator_cl = copy.deepcopy(generator).to(memory_format=torch.channels_last)
    discriminator_cl = copy.deepcopy(discriminator).to(memory_format=torch.channels_last)
    image_cl = generator_cl(*args, step=3, alpha=0.5, **kwargs)
    scores_cl = discriminator_cl(image.contiguous(memory_format=torch.channels_last), step=3, alpha=0.5)
    assert_close_scaled(image_cl, image, what="channels_last image")
    assert_close_scaled(scores_cl, scores, what="channels_last scores")


@pytest.mark.parametrize("impl", ["reference", pytest.param("extension", marks=needs_kernels)])
def test_torch_compile(impl):
    """Compiled models give the eager image, scores and first-order gradients of every parameter."""
    generator, discriminator = tiny_generator(impl=impl), tiny_discriminator(impl=impl)
    args, kwargs = generator_inputs(2, "one")

    def run(g, d):
        image = g(*args, step=2, alpha=0.5, **kwargs)
        scores = d(image, step=2, alpha=0.5)
        params = [*g.parameters(), *d.parameters()]
        grads = torch.autograd.grad(scores.sum(), params, allow_unused=True, materialize_grads=True)
        return image, scores, *grads

    eager = run(generator, discriminator)
    compiled = run(torch.compile(generator), torch.compile(discriminator))
    for actual, expected in zip(compiled, eager, strict=True):
        assert_close_scaled(actual, expected, what="compiled")


@pytest.mark.parametrize("impl", ["reference", pytest.param("extension", marks=needs_kernels)])
def test_train_step_updates_both_networks(impl, device):
    # The seed's initialization: randomized weights would saturate the softplus losses.
    generator = StyledGenerator(code_dim=CODE_DIM, n_mlp=2, impl=impl, **TINY).to(device)
    discriminator = Discriminator(impl=impl, **TINY).to(device)
    g_running = copy.deepcopy(generator)
    g_optimizer, d_optimizer = make_optimizers(generator, discriminator)
    before = [copy.deepcopy(m.state_dict()) for m in (generator, discriminator, g_running)]
    real = torch.randn(BATCH, 3, 16, 16, device=device)
    losses = train_step(generator, discriminator, g_optimizer, d_optimizer, real, step=2, alpha=0.5,
                        g_running=g_running)
    assert all(torch.isfinite(losses[name]) for name in ("d", "penalty", "g"))
    for model, state in zip((generator, discriminator, g_running), before):
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
        assert changed, f"{type(model).__name__} did not change"
    assert all(p.requires_grad for p in discriminator.parameters())


def test_bad_inputs_get_clear_errors():
    """Wrong dtypes, devices, step/alpha types and values, noise, mixing ranges and truncation arguments are refused
    with an error naming the argument (they crashed deep inside an op or ran silently with a wrong meaning)."""
    generator, discriminator = tiny_generator(), tiny_discriminator()
    z, image = torch.randn(2, CODE_DIM), torch.randn(2, 3, 8, 8)
    noise = [torch.randn(2, 1, 4, 4), torch.randn(2, 1, 8, 8)]
    for dtype in (torch.float64, torch.float16):
        with pytest.raises(TypeError, match=f"latent 0 has dtype {dtype}"):
            generator(z.to(dtype), step=1)
        with pytest.raises(TypeError, match=f"input has dtype {dtype}"):
            discriminator(image.to(dtype), step=1)
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        discriminator(image.long(), step=1)
    with pytest.raises(ValueError, match="latent 0 is on meta"):
        generator(z.to("meta"), step=1)
    with pytest.raises(ValueError, match="input is on meta"):
        discriminator(image.to("meta"), step=1)
    for model, x in ((generator, z), (discriminator, image)):
        for step in (True, torch.tensor(1)):
            with pytest.raises(ValueError, match="step must be an int"):
                model(x, step=step)
        for alpha in (float("nan"), 2.0, -0.5, "0.5", True, torch.tensor(True)):
            with pytest.raises(ValueError, match="alpha must be a number in"):
                model(x, step=1, alpha=alpha)
    for bad_noise, match in ((noise[0], "noise must be a list"), ([None, noise[1]], r"noise\[0\]"),
                             ([noise[0], noise[0]], r"noise\[1\] .*\[2, 1, 8, 8\]"),
                             ([n.long() for n in noise], r"noise\[0\] must be a floating-point"),
                             ([n[:1] for n in noise], r"noise\[0\] .*\[2, 1, 4, 4\]"),
                             ([n.to("meta") for n in noise], r"noise\[0\] is on meta but the latents are on cpu")):
        with pytest.raises((TypeError, ValueError), match=match):
            generator(z, noise=bad_noise, step=1)
    for mixing_range in ((2, 0), (0, 9), (-5, 1), (3, 4), (0, 1, 2), (0.5, 1)):
        with pytest.raises(ValueError, match="mixing_range"):
            generator([z, z], step=2, mixing_range=mixing_range)
    with pytest.raises(ValueError, match="takes exactly two latents, got 3"):
        generator([z, z, z], step=2, mixing_range=(0, 1))
    mean = generator.mean_style(torch.randn(4, CODE_DIM))
    for bad_mean, match in ((torch.randn(3, CODE_DIM), r"\[1, 16\]"), (torch.tensor(1.0), r"\[1, 16\]"),
                            (mean.double(), "mean_style has dtype"), ([0.0] * CODE_DIM, "must be a torch.Tensor")):
        with pytest.raises((TypeError, ValueError), match=match):
            generator(z, step=1, mean_style=bad_mean, style_weight=0.7)
    for weight in (float("nan"), "a", torch.tensor([0.5, 0.5])):
        with pytest.raises(ValueError, match="style_weight must be a finite number"):
            generator(z, step=1, mean_style=mean, style_weight=weight)
    with pytest.raises(ValueError, match="style_weight=0.7 truncates towards mean_style"):
        generator(z, step=1, style_weight=0.7)
    with pytest.raises(ValueError, match="at least one latent"):
        generator.mean_style(torch.randn(0, CODE_DIM))


@needs_kernels
def test_accepted_edge_cases_match_reference():
    """numpy step, tensor / numpy alpha, a 1-D mean_style, non-contiguous inputs, batch 0: both impls agree."""
    import numpy as np

    generator, discriminator = tiny_generator(impl="extension"), tiny_discriminator(impl="extension")
    ref_g, ref_d = set_impl(copy.deepcopy(generator), "reference"), set_impl(copy.deepcopy(discriminator), "reference")
    z = torch.randn(CODE_DIM, 3).t()
    noise = [torch.randn(4 * 2**i, 4 * 2**i, 3, 1).permute(2, 3, 0, 1) for i in range(3)]
    mean = generator.mean_style(torch.randn(8, CODE_DIM))[0]
    kwargs = dict(noise=noise, step=np.int64(2), alpha=np.float32(0.5), mean_style=mean, style_weight=0.7)
    out = generator(z, **kwargs)
    torch.testing.assert_close(out, ref_g(z, **{**kwargs, "alpha": torch.tensor(0.5)}), atol=1e-4, rtol=1e-4)
    images = out.transpose(2, 3)
    torch.testing.assert_close(discriminator(images, step=2, alpha=0.5),
                               ref_d(images.contiguous(), step=2, alpha=0.5), atol=1e-4, rtol=1e-4)
    empty = generator(torch.randn(0, CODE_DIM), step=2, alpha=0.5)
    assert empty.shape == (0, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the minibatch statistic of no images: none, not a warning
        assert discriminator(empty, step=2).shape == (0, 1)


def test_set_impl_switches_the_ops_of_a_model_on_meta_tensors():
    """On meta tensors the reference runs (shapes only, the noise drawn on the latents' device) and the extension,
    which has no meta kernels, refuses: set_impl must reach the ops of both networks."""
    generator = set_impl(tiny_generator(impl="extension"), "reference").to("meta")
    discriminator = set_impl(tiny_discriminator(impl="extension"), "reference").to("meta")
    z = torch.randn(BATCH, CODE_DIM, device="meta")
    image = generator(z, step=2, alpha=0.5)
    assert image.shape == (BATCH, 3, 16, 16) and image.is_meta
    assert discriminator(image, step=2, alpha=0.5).shape == (BATCH, 1)
    for model, x in ((generator, z), (discriminator, image)):
        with pytest.raises(ValueError, match="impl='extension' has kernels for CPU and CUDA tensors only"):
            set_impl(model, "extension")(x, step=2)
