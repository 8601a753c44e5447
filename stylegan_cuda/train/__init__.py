"""Training pieces shared by the trainer and the benchmarks: the seed's R1 training iteration."""

from .step import (
    StepLosses,
    accumulate,
    discriminator_loss,
    generator_loss,
    make_optimizers,
    r1_penalty,
    sample_latents,
    train_step,
)

__all__ = [
    "StepLosses",
    "accumulate",
    "discriminator_loss",
    "generator_loss",
    "make_optimizers",
    "r1_penalty",
    "sample_latents",
    "train_step",
]
