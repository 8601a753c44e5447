"""One training iteration of the seed's train.py: a D step, a G step, the EMA. The trainer and the benchmarks share it.

The losses are the seed's (``--loss``):
- ``r1``: D ``softplus(-D(x)).mean() + gamma / 2 * mean(||grad_x D(x)||^2) + softplus(D(G(z))).mean()`` (R1 every
  iteration, ``gamma = 10``); G ``softplus(-D(G(z'))).mean()``.
- ``wgan-gp``: D ``-mean(D(x)) + 0.001 * mean(D(x)^2) + mean(D(G(z))) + 10 * mean((||grad D(x_hat)|| - 1)^2)`` with
  ``x_hat`` between a real and a fake image (one epsilon per sample); G ``-mean(D(G(z')))``.
Fakes for the D step are made without a generator graph. With ``mixing``, the latents of both steps are pairs (the
generator mixes their styles at a random crossover) with probability 0.9, decided once per iteration as the seed.
Adam with ``betas=(0, 0.99)``, the mapping network at 1/100 of the learning rate. ``amp`` runs the forward passes
under autocast (bf16, or fp16 with loss scaling, including the penalties' input gradients).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Discriminator, StyledGenerator

MIXING_PROBABILITY = 0.9
MAPPING_LR_SCALE = 0.01
ADAM_BETAS = (0.0, 0.99)
WGAN_DRIFT = 0.001
LOSSES = ("r1", "wgan-gp")
AMP_MODES = ("off", "bf16", "fp16")


def make_optimizers(generator: StyledGenerator, discriminator: Discriminator, lr: float = 1e-3):
    """The seed's Adam optimizers ``(g_optimizer, d_optimizer)``, on torch's fused Adam kernels (CPU and CUDA): the
    same update up to float rounding, in one pass over all parameters instead of a loop of small ops per parameter."""
    g_optimizer = torch.optim.Adam(
        [{"params": generator.synthesis.parameters()},
         {"params": generator.mapping.parameters(), "lr": lr * MAPPING_LR_SCALE, "mult": MAPPING_LR_SCALE}],
        lr=lr, betas=ADAM_BETAS, fused=True,
    )
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=ADAM_BETAS, fused=True)
    return g_optimizer, d_optimizer


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, still fused: a loaded state's settings replace the optimizer's, and a
    state saved by the unfused optimizer of earlier versions would switch the kernels off (and break GradScaler)."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None


@torch.no_grad()
def accumulate(ema: nn.Module, model: nn.Module, decay: float = 0.999) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every parameter (the seed's ``accumulate``), as two multi-tensor
    ops."""
    ema_params = dict(ema.named_parameters())
    targets = [ema_params[name] for name, _ in model.named_parameters()]
    torch._foreach_mul_(targets, decay)
    torch._foreach_add_(targets, [param.detach() for param in model.parameters()], alpha=1 - decay)


def sample_latents(batch: int, code_dim: int, device, mixing: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The latents of one iteration's D step and G step: one batch each, or, with ``mixing`` and probability 0.9, a
    pair each (style mixing), decided once for both steps as the seed's train.py does."""
    count = 2 if mixing and random.random() < MIXING_PROBABILITY else 1
    latents = list(torch.randn(2 * count, batch, code_dim, device=device).unbind(0))
    return latents[:count], latents[count:]


def autocast(device_type: str, amp: str):
    """The autocast context of an ``amp`` mode (``off``, ``bf16``, ``fp16``)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def input_gradient(scores: torch.Tensor, inputs: torch.Tensor, scaler=None) -> torch.Tensor:
    """``d sum(scores) / d inputs`` with a graph; through the loss scale (then unscaled) when ``scaler`` is enabled."""
    total = scores.sum()
    if scaler is not None and scaler.is_enabled():
        (grad,) = torch.autograd.grad(scaler.scale(total), inputs, create_graph=True)
        return grad / scaler.get_scale()
    (grad,) = torch.autograd.grad(total, inputs, create_graph=True)
    return grad


def r1_penalty(real_scores: torch.Tensor, real: torch.Tensor, gamma: float = 10.0, scaler=None) -> torch.Tensor:
    """``gamma / 2 * mean over the batch of ||grad_x sum(D(x))||^2``, differentiable for the D update."""
    grad = input_gradient(real_scores, real, scaler)
    return gamma / 2 * grad.float().flatten(1).pow(2).sum(1).mean()


@dataclasses.dataclass(frozen=True)
class StepConfig:
    loss: str = "r1"
    mixing: bool = True
    r1_gamma: float = 10.0
    gp_weight: float = 10.0
    amp: str = "off"
    ema_decay: float = 0.999

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")


def _optimize(loss, params: Callable[[], Iterable[nn.Parameter]], optimizer, scaler, reduce_gradients) -> None:
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if reduce_gradients is not None:
        reduce_gradients(params())
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def train_step(generator: StyledGenerator, discriminator: Discriminator, g_optimizer, d_optimizer,
               real: torch.Tensor, step: int, alpha: float, config: StepConfig = StepConfig(),
               g_running: StyledGenerator | None = None, d_scaler=None, g_scaler=None,
               reduce_gradients: Callable[[Iterable[nn.Parameter]], None] | None = None) -> dict[str, torch.Tensor]:
    """One D step and one G step (the seed's ``n_critic = 1``) on ``real`` ``[N, 3, 4 * 2**step, 4 * 2**step]``,
    then the EMA into ``g_running``. ``d_scaler``/``g_scaler``: GradScalers for fp16; ``reduce_gradients``: called on
    each model's parameters between backward and the optimizer step (the all-reduce of a distributed run).

    Returns the losses and mean scores as detached tensors (no device synchronization).
    """
    G, D = generator, discriminator
    batch, code_dim, device = real.shape[0], G.config["code_dim"], real.device
    amp = lambda: autocast(device.type, config.amp)  # noqa: E731
    d_latents, g_latents = sample_latents(batch, code_dim, device, config.mixing)

    D.requires_grad_(True)
    d_optimizer.zero_grad(set_to_none=True)
    if config.loss == "r1":
        real = real.detach().requires_grad_(True)
    with amp():
        real_scores = D(real, step=step, alpha=alpha).float()
    if config.loss == "r1":
        real_loss = F.softplus(-real_scores).mean()
        penalty = r1_penalty(real_scores, real, config.r1_gamma, d_scaler)
    else:
        real_loss = -real_scores.mean() + WGAN_DRIFT * real_scores.pow(2).mean()
    with torch.no_grad(), amp():
        fake = G(d_latents, step=step, alpha=alpha).float()
    with amp():
        fake_scores = D(fake, step=step, alpha=alpha).float()
    if config.loss == "r1":
        fake_loss = F.softplus(fake_scores).mean()
    else:
        fake_loss = fake_scores.mean()
        eps = torch.rand(batch, 1, 1, 1, device=device)
        x_hat = (eps * real.detach() + (1 - eps) * fake).requires_grad_(True)
        with amp():
            hat_scores = D(x_hat, step=step, alpha=alpha).float()
        grad = input_gradient(hat_scores, x_hat, d_scaler)
        penalty = config.gp_weight * (grad.float().flatten(1).norm(2, dim=1) - 1).pow(2).mean()
    d_loss = real_loss + fake_loss + penalty
    _optimize(d_loss, D.parameters, d_optimizer, d_scaler, reduce_gradients)

    D.requires_grad_(False)
    g_optimizer.zero_grad(set_to_none=True)
    with amp():
        scores = D(G(g_latents, step=step, alpha=alpha), step=step, alpha=alpha).float()
    g_loss = F.softplus(-scores).mean() if config.loss == "r1" else -scores.mean()
    _optimize(g_loss, G.parameters, g_optimizer, g_scaler, reduce_gradients)
    D.requires_grad_(True)

    if g_running is not None:
        accumulate(g_running, G, config.ema_decay)
    return {"d": d_loss.detach(), "g": g_loss.detach(), "penalty": penalty.detach(),
            "real": real_scores.detach().mean(), "fake": fake_scores.detach().mean()}
