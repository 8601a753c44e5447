"""Progressive growing as the seed schedules it, with its ``--lr`` bug fixed.

The seed (rosinality/style-based-gan-pytorch ``train.py``) trains each resolution on ``2 * phase`` images: the first
``phase`` of them fade the new top block in (``alpha = min(1, (used_sample + 1) / phase)``), the rest train it at
``alpha = 1``. At the first iteration that finds ``used_sample > 2 * phase`` the resolution doubles, ``used_sample``
restarts at 0 and that iteration runs at ``alpha = 0``. The first resolution is not faded in. Past ``max_size`` the
run stays at ``max_size`` with ``alpha = 1`` ("final progress").

Learning rate and batch: with ``--sched`` the seed's tables; without, ``--lr`` and ``--batch`` at every resolution.
(The seed overwrote ``--lr`` with 0.001 whenever ``--sched`` was off; here ``--lr`` is the rate, and with
``--sched`` it is the rate of the resolutions the table leaves out.)
"""

from __future__ import annotations

import dataclasses
import math

from ..models.widths import RESOLUTIONS

# The seed's --sched tables.
SCHED_LR = {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}
SCHED_BATCH = {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 32, 256: 32}


def step_of(resolution: int) -> int:
    """``log2(resolution) - 2``; a clear error unless ``resolution`` is one of 4, 8, ..., 1024."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}, got {resolution}")
    return int(math.log2(resolution)) - 2


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What the arguments ``--phase --init_size --max_size --sched --lr --batch`` fix."""

    phase: int = 600_000
    init_size: int = 8
    max_size: int = 1024
    sched: bool = False
    lr: float = 1e-3
    batch: int = 32

    def __post_init__(self):
        if self.phase < 1:
            raise ValueError(f"phase must be >= 1 image, got {self.phase}")
        init_step, max_step = step_of(self.init_size), step_of(self.max_size)
        if init_step > max_step:
            raise ValueError(f"init_size {self.init_size} is larger than max_size {self.max_size}")
        if not 0 < self.lr < math.inf:  # NaN included
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    @property
    def init_step(self) -> int:
        return step_of(self.init_size)

    @property
    def max_step(self) -> int:
        return step_of(self.max_size)

    @property
    def resolutions(self) -> list[int]:
        """Every resolution the run trains at, smallest first."""
        return [4 * 2**step for step in range(self.init_step, self.max_step + 1)]

    def lr_at(self, resolution: int) -> float:
        return SCHED_LR.get(resolution, self.lr) if self.sched else self.lr

    def batch_at(self, resolution: int) -> int:
        return SCHED_BATCH.get(resolution, self.batch) if self.sched else self.batch


@dataclasses.dataclass
class Progress:
    """Where a run stands: the state that a checkpoint keeps so that a resumed run continues where it stopped."""

    step: int
    used_sample: int = 0
    final: bool = False
    # A run started from trained weights fades its first resolution in (the seed does so with --ckpt).
    fade_init: bool = False

    @classmethod
    def start(cls, schedule: Schedule) -> "Progress":
        return cls(step=schedule.init_step)

    @property
    def resolution(self) -> int:
        return 4 * 2**self.step

    def alpha(self, schedule: Schedule) -> float:
        """The fade-in weight of the top block for the next iteration (before any step-up)."""
        if self.final or (self.step == schedule.init_step and not self.fade_init):
            return 1.0
        return min(1.0, (self.used_sample + 1) / schedule.phase)

    def begin_iteration(self, schedule: Schedule) -> tuple[float, bool]:
        """``(alpha, stepped_up)`` of the iteration about to run; doubles the resolution when its images are done."""
        alpha = self.alpha(schedule)
        if self.used_sample <= 2 * schedule.phase:
            return alpha, False
        self.used_sample = 0
        if self.step >= schedule.max_step:
            # At max_size: the fade-in and the stable phase are done, train on at alpha = 1.
            self.step = schedule.max_step
            self.final = True
            return 1.0, False
        self.step += 1
        return 0.0, True

    def end_iteration(self, images: int) -> None:
        self.used_sample += images

    def state_dict(self) -> dict:
        return {"step": self.step, "used_sample": self.used_sample, "final": self.final, "fade_init": self.fade_init}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Progress":
        return cls(step=int(state["step"]), used_sample=int(state["used_sample"]), final=bool(state["final"]),
                   fade_init=bool(state.get("fade_init", False)))
