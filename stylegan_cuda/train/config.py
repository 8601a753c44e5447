"""train.py's options: their defaults and ranges, the checked :class:`TrainConfig`, and :class:`TrainError`."""

from __future__ import annotations

import dataclasses
import math

from .schedule import Schedule
from .step import AMP_MODES, LOSSES

# Options a resumed run takes from its checkpoint unless given again; ``None`` on the command line means "not given".
DEFAULTS = dict(
    dataset=None, out="run", phase=600_000, lr=1e-3, sched=False, batch=32, init_size=8, max_size=1024,
    loss="wgan-gp", r1_gamma=10.0, gp_weight=10.0, mixing=False, from_rgb_activate=True, channel_base=16384,
    max_channels=512, code_dim=512, n_mlp=8, ema_decay=0.999, amp="off", iterations=3_000_000, seed=0,
    sample_every=100, save_every=10_000, log_every=100,
)
# Set by the networks in a checkpoint: a different value on the command line is an error.
MODEL_OPTIONS = ("channel_base", "max_channels", "code_dim", "n_mlp", "from_rgb_activate")
# The numeric options' ranges, bounds included (NaN and infinity are outside every range); --phase, --lr, --batch and
# the sizes are checked by Schedule. A seed below 2**32 fits every seed derived from it (as numpy's legacy one).
OPTION_RANGES = dict(
    iterations=(0, math.inf), sample_every=(1, math.inf), save_every=(1, math.inf), log_every=(1, math.inf),
    code_dim=(1, math.inf), n_mlp=(0, math.inf), num_workers=(0, math.inf), seed=(0, 2**32 - 1),
    ema_decay=(0.0, 1.0), r1_gamma=(0.0, math.inf), gp_weight=(0.0, math.inf),
)


class TrainError(ValueError):
    """Bad input to training: a missing or unfit dataset, a checkpoint that cannot be resumed, conflicting options."""


@dataclasses.dataclass
class TrainConfig:
    dataset: str
    out: str = DEFAULTS["out"]
    phase: int = DEFAULTS["phase"]
    lr: float = DEFAULTS["lr"]
    sched: bool = DEFAULTS["sched"]
    batch: int = DEFAULTS["batch"]
    init_size: int = DEFAULTS["init_size"]
    max_size: int = DEFAULTS["max_size"]
    loss: str = DEFAULTS["loss"]
    r1_gamma: float = DEFAULTS["r1_gamma"]
    gp_weight: float = DEFAULTS["gp_weight"]
    mixing: bool = DEFAULTS["mixing"]
    from_rgb_activate: bool = DEFAULTS["from_rgb_activate"]
    channel_base: int = DEFAULTS["channel_base"]
    max_channels: int = DEFAULTS["max_channels"]
    code_dim: int = DEFAULTS["code_dim"]
    n_mlp: int = DEFAULTS["n_mlp"]
    ema_decay: float = DEFAULTS["ema_decay"]
    amp: str = DEFAULTS["amp"]
    iterations: int = DEFAULTS["iterations"]
    seed: int = DEFAULTS["seed"]
    sample_every: int = DEFAULTS["sample_every"]
    save_every: int = DEFAULTS["save_every"]
    log_every: int = DEFAULTS["log_every"]
    # Not taken from a checkpoint: where and how this process runs.
    impl: str | None = None  # None: STYLEGAN_CUDA_IMPL, else auto
    device: str = "auto"
    channels_last: bool = False
    num_workers: int | None = None
    resume: str | None = None

    def check(self) -> None:
        """Raise :class:`TrainError` for an option value that training cannot use."""
        if self.loss not in LOSSES:
            raise TrainError(f"--loss must be r1 or wgan-gp, got {self.loss!r}")
        if self.amp not in AMP_MODES:
            raise TrainError(f"--amp must be off, bf16 or fp16, got {self.amp!r}")
        for name, (low, high) in OPTION_RANGES.items():
            value = getattr(self, name)
            if value is not None and not (low <= value <= high and value != math.inf):
                allowed = f">= {low}" if high == math.inf else f"from {low} to {high}"
                raise TrainError(f"--{name} must be {allowed}, got {value}")

    def schedule(self) -> Schedule:
        try:
            return Schedule(phase=self.phase, init_size=self.init_size, max_size=self.max_size, sched=self.sched,
                            lr=self.lr, batch=self.batch)
        except ValueError as error:
            raise TrainError(str(error)) from None

    def resumable(self) -> dict:
        return {key: getattr(self, key) for key in DEFAULTS}
