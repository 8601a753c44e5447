"""Training: the seed's iteration (``step``), its progressive schedule, the trainer and its distributed helpers."""

from .step import AMP_MODES, LOSSES, StepConfig, accumulate, make_optimizers, r1_penalty, sample_latents, train_step

__all__ = ["AMP_MODES", "LOSSES", "StepConfig", "accumulate", "make_optimizers", "r1_penalty", "sample_latents",
           "train_step"]
