"""One training iteration of the seed's train.py with ``--loss r1`` and ``--mixing``: a D step, a G step, the EMA.

The losses are the seed's:
- D: ``softplus(-D(x)).mean() + gamma / 2 * mean(||grad_x D(x)||^2) + softplus(D(G(z))).mean()`` (R1 every
  iteration, ``gamma = 10``), on real images ``x`` and fakes made without a generator graph;
- G: ``softplus(-D(G(z'))).mean()`` on fresh latents.
With ``mixing``, each set of latents is a pair (the generator mixes their styles at a random crossover) with
probability 0.9. Adam with ``betas=(0, 0.99)``, the mapping network at 1/100 of the learning rate.
"""

from __future__ import annotations

import dataclasses
import random

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Discriminator, StyledGenerator

MIXING_PROBABILITY = 0.9
MAPPING_LR_SCALE = 0.01
ADAM_BETAS = (0.0, 0.99)


def make_optimizers(generator: StyledGenerator, discriminator: Discriminator, lr: float = 1e-3):
    """The seed's Adam optimizers ``(g_optimizer, d_optimizer)``."""
    g_optimizer = torch.optim.Adam(
        [{"params": generator.synthesis.parameters()},
         {"params": generator.mapping.parameters(), "lr": lr * MAPPING_LR_SCALE, "mult": MAPPING_LR_SCALE}],
        lr=lr, betas=ADAM_BETAS,
    )
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=ADAM_BETAS)
    return g_optimizer, d_optimizer


@torch.no_grad()
def accumulate(ema: nn.Module, model: nn.Module, decay: float = 0.999) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every parameter (the seed's ``accumulate``)."""
    ema_params = dict(ema.named_parameters())
    for name, param in model.named_parameters():
        ema_params[name].mul_(decay).add_(param.detach(), alpha=1 - decay)


def sample_latents(batch: int, code_dim: int, device, mixing: bool) -> list[torch.Tensor]:
    """One latent batch, or two (style mixing) with probability 0.9 when ``mixing``."""
    count = 2 if mixing and random.random() < MIXING_PROBABILITY else 1
    return list(torch.randn(count, batch, code_dim, device=device).unbind(0))


def r1_penalty(real_scores: torch.Tensor, real: torch.Tensor, gamma: float = 10.0) -> torch.Tensor:
    """``gamma / 2 * mean over the batch of ||grad_x sum(D(x))||^2``, differentiable for the D update."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
    return gamma / 2 * grad.flatten(1).pow(2).sum(1).mean()


def discriminator_loss(generator, discriminator, real, step, alpha, mixing=True, r1_gamma=10.0):
    """The D loss and its parts (``real``, ``r1``, ``fake``) for one batch of real images."""
    real = real.detach().requires_grad_(True)
    real_scores = discriminator(real, step=step, alpha=alpha)
    with torch.no_grad():
        fake = generator(sample_latents(real.shape[0], generator.config["code_dim"], real.device, mixing),
                         step=step, alpha=alpha)
    real_loss = F.softplus(-real_scores).mean()
    r1 = r1_penalty(real_scores, real, r1_gamma)
    fake_loss = F.softplus(discriminator(fake, step=step, alpha=alpha)).mean()
    return real_loss + r1 + fake_loss, {"real": real_loss, "r1": r1, "fake": fake_loss}


def generator_loss(generator, discriminator, batch, step, alpha, device, mixing=True):
    """``softplus(-D(G(z))).mean()`` for fresh latents."""
    fake = generator(sample_latents(batch, generator.config["code_dim"], device, mixing), step=step, alpha=alpha)
    return F.softplus(-discriminator(fake, step=step, alpha=alpha)).mean()


@dataclasses.dataclass
class StepLosses:
    d_loss: float
    r1: float
    g_loss: float


def train_step(generator: StyledGenerator, discriminator: Discriminator, g_optimizer, d_optimizer,
               real: torch.Tensor, step: int, alpha: float, mixing: bool = True, r1_gamma: float = 10.0,
               g_running: StyledGenerator | None = None, ema_decay: float = 0.999,
               sync_losses: bool = True) -> StepLosses | None:
    """One D step (with R1) and one G step on ``real`` ``[N, 3, 4 * 2**step, 4 * 2**step]``; then the EMA.

    Returns the losses as floats, or ``None`` with ``sync_losses=False`` (no device synchronization).
    """
    discriminator.requires_grad_(True)
    d_optimizer.zero_grad(set_to_none=True)
    d_loss, parts = discriminator_loss(generator, discriminator, real, step, alpha, mixing, r1_gamma)
    d_loss.backward()
    d_optimizer.step()

    discriminator.requires_grad_(False)
    g_optimizer.zero_grad(set_to_none=True)
    g_loss = generator_loss(generator, discriminator, real.shape[0], step, alpha, real.device, mixing)
    g_loss.backward()
    g_optimizer.step()
    discriminator.requires_grad_(True)

    if g_running is not None:
        accumulate(g_running, generator, ema_decay)
    if not sync_losses:
        return None
    return StepLosses(d_loss.item(), parts["r1"].item(), g_loss.item())
