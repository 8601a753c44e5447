"""``train.py``: progressive-growing StyleGAN training as the seed does it, with the seed's complaints fixed.

- ``--resume`` continues at the same resolution, fade-in and image count, with the optimizers, the EMA generator,
  every random generator and the data order: the resumed run computes the same losses as an uninterrupted one.
  A file holding only the EMA generator is refused with an explanation; the seed's ``train_step-N.model`` files start
  a run from their weights and Adam states through :func:`stylegan_cuda.checkpoint.load_rosinality`.
- ``--out DIR`` is created with ``DIR/checkpoint`` and ``DIR/sample``; checkpoints are written atomically, and a run
  refuses to start where it would write over checkpoints past its first iteration (another run's, or the later ones
  of the run it resumes from an earlier checkpoint).
- SIGINT / SIGTERM end the run after the current iteration, with a checkpoint (:class:`StopRequest`); diverged
  (non-finite) weights end it with an error, and are never written to a checkpoint (:meth:`Trainer.check_finite`);
  a damaged database record ends it with an error naming the record, after a checkpoint of the iterations done.
- Option values outside their ranges are refused before anything runs (:meth:`TrainConfig.check`).
- ``--lr`` is the learning rate when ``--sched`` is off (the seed overwrote it).
- Samples use fixed latents and noise, so successive sample grids show the same images evolving.
- Mixed precision (``--amp bf16|fp16``), several processes with ``torchrun`` (gradients averaged by all-reduce, the
  data split by rank, files written by rank 0 only). The ranks must be given the same options; a problem one rank
  meets alone (a damaged record, a file rank 0 cannot write) ends every rank with its error, and a rank that dies
  ends the others with an error naming the last checkpoint, never a wait.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import checkpoint as ckpt
from ..data.dataset import DatasetError, MultiResolutionDataset, read_database_info
from ..generate.grid import save_grid
from ..models import Discriminator, StyledGenerator, weights_finite
from ..models.widths import RESOLUTIONS
from ..ops.dispatch import IMPLS, check_impl
from ..stop_signals import STOP_SIGNALS, handling_stop_signals
from . import distributed
from .distributed import DistInfo
from .schedule import Progress, Schedule
from .step import AMP_MODES, LOSSES, StepConfig, make_optimizers, train_step

TRAINING_KIND = "stylegan_cuda.train"
TRAINING_VERSION = 1
# The seed's sample grids: (images per row, rows) by resolution.
SAMPLE_GRID = {512: (8, 4), 1024: (4, 2)}
SAMPLE_GRID_DEFAULT = (10, 5)

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


# ----------------------------------------------------------------------------------------------------------- data


def _image_to_tensor(image) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    return pixels.float().div_(127.5).sub_(1)


class _FlippableImages(Dataset):
    """Images of one resolution addressed by ``2 * index + flip``: the flip is chosen by the sampler, not drawn in
    the loader, so the data stream does not depend on loader workers and can be resumed exactly."""

    def __init__(self, dataset: MultiResolutionDataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key: int) -> torch.Tensor:
        image = self.dataset[key // 2]
        return image.flip(-1) if key % 2 else image


class ResumableBatches(Sampler):
    """An endless stream of batches of ``2 * index + flip`` keys for one rank, starting at sample ``position``.

    Epoch ``e`` is a permutation of the dataset with a random left-right flip per image, drawn from a generator seeded
    by ``(seed, resolution, e)`` and padded (by its first keys) to a multiple of ``world_size``; rank ``r`` takes
    every ``world_size``-th key from the ``r``-th (as ``DistributedSampler``). Batches run across epoch ends, so any
    dataset size fits any batch size.
    """

    def __init__(self, length: int, batch: int, seed: int, resolution: int, rank: int = 0, world_size: int = 1,
                 position: int = 0):
        self.length, self.batch, self.seed, self.resolution = length, batch, seed, resolution
        self.rank, self.world_size, self.position = rank, world_size, position
        self.per_rank = math.ceil(length / world_size)

    @staticmethod
    def rank_position(length: int, position: int, world_size: int, new_world_size: int) -> int:
        """A rank's ``position`` in a run of ``world_size`` ranks as one in a run of ``new_world_size``: the same
        epoch, as much of it done (exactly where ``new_world_size`` divides the keys the ranks took of it)."""
        epoch, offset = divmod(position, math.ceil(length / world_size))
        return epoch * math.ceil(length / new_world_size) + offset * world_size // new_world_size

    def epoch_keys(self, epoch: int) -> torch.Tensor:
        seed = ((self.seed * 1_000_003 + self.resolution) * 65_537 + epoch) % 2**63  # torch takes 64 bits
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(self.length, generator=generator)
        flips = torch.randint(0, 2, (self.length,), generator=generator)
        keys = order * 2 + flips
        total = self.per_rank * self.world_size
        if total > self.length:
            keys = keys.repeat(math.ceil(total / self.length))[:total]
        return keys[self.rank::self.world_size]

    def __iter__(self):
        epoch, offset = divmod(self.position, self.per_rank)
        keys = self.epoch_keys(epoch)
        while True:
            batch = []
            while len(batch) < self.batch:
                if offset == self.per_rank:
                    epoch, offset = epoch + 1, 0
                    keys = self.epoch_keys(epoch)
                take = min(self.batch - len(batch), self.per_rank - offset)
                batch.extend(keys[offset:offset + take].tolist())
                offset += take
            yield batch


def open_dataset(path, schedule: Schedule) -> MultiResolutionDataset:
    """The dataset, checked to hold every resolution the schedule trains at."""
    if path is None:
        raise TrainError("no dataset given: train.py DATASET_LMDB (a database made by prepare_data.py)")
    try:
        _, resolutions, _ = read_database_info(path)
        missing = [r for r in schedule.resolutions if r not in resolutions]
        if missing:
            raise TrainError(
                f"dataset {path} holds {', '.join(map(str, resolutions))} px but training from {schedule.init_size} "
                f"to {schedule.max_size} px needs {', '.join(map(str, missing))} px too: prepare it with "
                f"prepare_data.py --sizes {','.join(map(str, schedule.resolutions))}"
            )
        return MultiResolutionDataset(path, transform=_image_to_tensor, resolution=schedule.init_size)
    except (FileNotFoundError, ValueError, OSError, lmdb.Error) as error:
        if isinstance(error, TrainError):
            raise
        raise TrainError(f"dataset: {error}") from None


# ----------------------------------------------------------------------------------------------------- checkpoints


@dataclasses.dataclass
class ResumeSource:
    """What ``--resume`` found: the models, and the training state of a checkpoint written by this trainer."""

    path: Path
    models: dict
    training: dict | None
    init_size: int | None = None  # for the seed's train_step-N.model
    seed_adam_states: dict | None = None  # the seed's optimizer states by parameter name (checkpoint.load_rosinality)


def find_checkpoint(path) -> Path:
    """``path`` itself, or the latest checkpoint in the folder ``path`` (or in its ``checkpoint/``)."""
    try:
        return ckpt.find(path)
    except ckpt.CheckpointError as error:
        raise TrainError(f"--resume {error}") from None


def _torch_load(path: Path):
    try:
        return ckpt.read(path)
    except ckpt.CheckpointError as error:
        raise TrainError(f"--resume: {error}") from None


EMA_ONLY = ("{path} holds only the EMA generator (g_running){what}: training cannot continue from it (it has no "
            "discriminator, no trained generator and no optimizer state). Generate images from it with generate.py, "
            "or resume from a checkpoint written by train.py (DIR/checkpoint/NNNNNN.pt) or the seed's "
            "train_step-N.model.")


def read_resume(path, impl: str | None = None) -> ResumeSource:
    """Read ``--resume``: this trainer's checkpoint, a model-only checkpoint of this project, or the seed's files."""
    path = find_checkpoint(path)
    data = _torch_load(path)
    if isinstance(data, dict) and data.get("format") == ckpt.FORMAT:
        models = ckpt.load_from_data(data, path, impl=impl)
        training = data.get("training")
        if training is not None:
            if not isinstance(training, dict) or training.get("kind") != TRAINING_KIND:
                raise TrainError(f"--resume {path}: its training state is not one written by train.py")
            if training.get("version") != TRAINING_VERSION:
                raise TrainError(f"--resume {path}: training state version {training.get('version')!r}; "
                                 f"this train.py reads version {TRAINING_VERSION}")
        if models["generator"] is None or models["discriminator"] is None:
            if models["g_running"] is not None:
                raise TrainError(EMA_ONLY.format(path=path, what=""))
            raise TrainError(f"--resume {path}: the checkpoint holds no generator and discriminator to train")
        return ResumeSource(path, models, training)
    if isinstance(data, dict) and ("g_running" in data or "generator" in data or
                                   "generator.progression.0.conv1.input" in data or
                                   "module.generator.progression.0.conv1.input" in data):
        models = ckpt.rosinality_from_data(data, path, impl=impl, optimizers=True)
        adam_states = {name: models.pop(name) for name in ("g_optimizer", "d_optimizer")}
        if models["generator"] is None or models["discriminator"] is None:
            raise TrainError(EMA_ONLY.format(path=path, what=" of the seed (a NNNNNN.model file)"))
        match = re.search(r"train_step-(\d+)", path.name)
        init_size = None
        if match:
            init_size = RESOLUTIONS[min(int(match.group(1)), len(RESOLUTIONS) - 1)]
        return ResumeSource(path, models, None, init_size, adam_states)
    raise TrainError(f"--resume {path}: not a checkpoint of train.py nor of the seed "
                     "(rosinality/style-based-gan-pytorch)")


def _model_entry(model) -> dict:
    return {"kind": type(model).__name__, "config": dict(model.config),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}


def _rng_state(device: torch.device) -> dict:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------------------------------------- trainer


class StopRequest:
    """While entered (in the main thread): SIGINT or SIGTERM (Ctrl-C, a scheduler's preemption) asks the run to stop
    after the current iteration, with a checkpoint; a second one stops at once (``KeyboardInterrupt``), even where
    the code it lands in turns the interrupt into another error (``torch.save`` raises a ``RuntimeError``).

    With ``repeat_stops_at_once=False`` (the ranks of ``torchrun``) a repeat is the same request: torchrun forwards
    the signal it gets to every rank, which a batch scheduler signals directly as well, and it kills the ranks itself
    when they outlast its grace period."""

    def __init__(self, repeat_stops_at_once: bool = True):
        self.signum: int | None = None
        self.interrupted = False
        self.repeat_stops_at_once = repeat_stops_at_once
        self._handling = contextlib.ExitStack()

    def __enter__(self) -> "StopRequest":
        self._handling.enter_context(handling_stop_signals(self._handle))
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._handling.close()
        if self.interrupted and exc is not None and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from exc

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        elif self.repeat_stops_at_once:
            self.interrupted = True
            raise KeyboardInterrupt


def _ignore_stop_signals(worker_id: int) -> None:
    """Data loader workers leave SIGINT / SIGTERM to the main process, which stops at the end of an iteration."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class Trainer:
    """Builds the models, optimizers and data of a run (fresh or resumed) and trains it."""

    def __init__(self, config: TrainConfig, resume: ResumeSource | None = None, info: DistInfo | None = None,
                 device: torch.device | None = None, log=print):
        self.config, self.info = config, info or DistInfo()
        self.device = device or distributed.resolve_device(config.device, self.info.local_rank)
        self.log = log if self.info.is_main else (lambda *a, **k: None)
        self.on_iteration = None  # callable(iteration, {name: float}); forces a device sync per iteration
        config.check()
        self.schedule = config.schedule()
        for resolution in self.schedule.resolutions:
            if self.schedule.batch_at(resolution) % self.info.world_size:
                raise TrainError(f"the batch at {resolution} px ({self.schedule.batch_at(resolution)}) must be a "
                                 f"multiple of the number of processes ({self.info.world_size})")
        self.dataset = open_dataset(config.dataset, self.schedule)
        self.out = Path(config.out)
        self.checkpoint_dir, self.sample_dir = self.out / "checkpoint", self.out / "sample"

        torch.manual_seed(config.seed)  # the same initial weights on every rank
        widths = dict(channel_base=config.channel_base, max_channels=config.max_channels)
        try:
            self.generator = StyledGenerator(code_dim=config.code_dim, n_mlp=config.n_mlp, impl=config.impl, **widths)
            self.discriminator = Discriminator(from_rgb_activate=config.from_rgb_activate, impl=config.impl, **widths)
            self.g_running = StyledGenerator(code_dim=config.code_dim, n_mlp=config.n_mlp, impl=config.impl, **widths)
        except ValueError as error:
            raise TrainError(f"model options: {error}") from None
        self.g_running.load_state_dict(self.generator.state_dict())
        self.progress = Progress.start(self.schedule)
        self.iteration = 0
        self.data_position = 0
        self.last_alpha = None  # alpha of the last iteration run
        self.stopped_by = None  # the signal that stopped run(), if one did
        self.last_checkpoint: Path | None = None  # written by this process's run
        if resume is not None:
            self._load_weights(resume)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        for model in (self.generator, self.discriminator, self.g_running):
            model.to(self.device, memory_format=self.memory_format)
        self.g_running.train(False).requires_grad_(False)
        self.g_optimizer, self.d_optimizer = make_optimizers(self.generator, self.discriminator, self.schedule.lr)
        self.g_scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.d_scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.step_config = StepConfig(loss=config.loss, mixing=config.mixing, r1_gamma=config.r1_gamma,
                                      gp_weight=config.gp_weight, amp=config.amp, ema_decay=config.ema_decay)

        if resume is not None and resume.seed_adam_states is not None:
            self._load_seed_adam_states(resume.seed_adam_states)
        training = resume.training if resume is not None else None
        rng = self._load_training(training) if training is not None else None
        self._check_same_run()
        if training is None:
            for model in (self.generator, self.discriminator, self.g_running):
                distributed.broadcast_module(model, self.info)
        if rng is not None:
            _set_rng_state(rng, self.device)
        else:
            train_seed = config.seed * 1000 + self.info.rank + 1
            torch.manual_seed(train_seed)
            random.seed(train_seed)
            np.random.seed(train_seed % 2**32)
        self._loader_iter = None
        self._loader_resolution = None

    # ------------------------------------------------------------------------------------------------ resume

    def _load_weights(self, resume: ResumeSource) -> None:
        models = resume.models
        self.generator.load_state_dict(models["generator"].state_dict())
        self.discriminator.load_state_dict(models["discriminator"].state_dict())
        ema = models["g_running"] or models["generator"]
        self.g_running.load_state_dict(ema.state_dict())
        if resume.training is None:
            self.progress.fade_init = True

    def _load_seed_adam_states(self, states: dict) -> None:
        """Continue the seed's Adam moments: its state of each parameter, found by name."""
        for optimizer, model, name in ((self.g_optimizer, self.generator, "g_optimizer"),
                                       (self.d_optimizer, self.discriminator, "d_optimizer")):
            if states[name] is not None:
                ckpt.load_adam_states(optimizer, model, states[name])

    def _load_training(self, training: dict):
        self.progress = Progress.from_state_dict(training["progress"])
        if not self.schedule.init_step <= self.progress.step <= self.schedule.max_step:
            raise TrainError(f"the checkpoint is at {self.progress.resolution} px, outside --init_size "
                             f"{self.schedule.init_size} to --max_size {self.schedule.max_size}")
        self.iteration = int(training["iteration"])
        self.last_alpha = training.get("last_alpha")
        self.data_position = int(training["data_position"])
        try:
            self.g_optimizer.load_state_dict(training["g_optimizer"])
            self.d_optimizer.load_state_dict(training["d_optimizer"])
        except (ValueError, KeyError) as error:
            raise TrainError(f"the checkpoint's optimizer state does not fit the models: {error}") from None
        if self.config.amp == "fp16" and training.get("g_scaler"):
            self.g_scaler.load_state_dict(training["g_scaler"])
            self.d_scaler.load_state_dict(training["d_scaler"])
        written_by = training.get("world_size") or 1
        if written_by != self.info.world_size:  # this rank's share of the epoch's rest
            self.data_position = ResumableBatches.rank_position(len(self.dataset), self.data_position, written_by,
                                                                self.info.world_size)
        states = training.get("rng") or []
        if len(states) == self.info.world_size:
            return states[self.info.rank]
        self.log(f"note: the checkpoint was written by {written_by} process(es), this run has "
                 f"{self.info.world_size}: random streams are re-seeded and the rest of the epoch is split anew, the "
                 "run is not bit-exact with the original")
        seed = self.config.seed * 1000 + self.info.rank + 1 + 7919 * self.iteration
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return None

    def _check_same_run(self) -> None:
        """Raise :class:`TrainError` on every rank where the ranks would not train the same run: options (the dataset
        and ``--out`` paths aside, which may differ between machines), dataset size or resumed iteration. Left to
        themselves, such ranks train with different batches, data or learning rates without an error."""
        mine = {f"--{key}": value for key, value in self.config.resumable().items() if key not in ("dataset", "out")}
        mine.update({"the dataset's image count": len(self.dataset), "the iteration resumed at": self.iteration})
        ranks = distributed.gather_objects(mine, self.info)
        for name, value in ranks[0].items():
            for rank, theirs in enumerate(ranks):
                if theirs[name] != value:
                    raise TrainError(f"the processes of this run differ in {name}: {value} on rank 0, {theirs[name]} "
                                     f"on rank {rank}; start every process with the same options, dataset and "
                                     "checkpoint")

    def current_alpha(self) -> float:
        """The fade-in weight the models were last trained at (the next one's before any iteration ran)."""
        return self.progress.alpha(self.schedule) if self.last_alpha is None else self.last_alpha

    def training_state(self) -> dict:
        """Everything besides the models that a resumed run needs (collective: every rank must call it)."""
        rng = distributed.gather_objects(_rng_state(self.device), self.info)
        return {
            "kind": TRAINING_KIND,
            "version": TRAINING_VERSION,
            "iteration": self.iteration,
            "progress": self.progress.state_dict(),
            "resolution": self.progress.resolution,
            "last_alpha": self.last_alpha,
            "alpha": self.current_alpha(),
            "data_position": self.data_position,
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "g_scaler": self.g_scaler.state_dict() if self.g_scaler.is_enabled() else {},
            "d_scaler": self.d_scaler.state_dict() if self.d_scaler.is_enabled() else {},
            "rng": rng,
            "world_size": self.info.world_size,
            "args": self.config.resumable(),
        }

    def last_checkpoint_text(self) -> str:
        """Where an error leaves the run: its last checkpoint, if it wrote one."""
        return (f"the last checkpoint written is {self.last_checkpoint}" if self.last_checkpoint
                else "this run wrote no checkpoint")

    def check_finite(self) -> None:
        """Raise :class:`TrainError` if training has diverged: a weight of a network is NaN or infinite."""
        for name, model in (("generator", self.generator), ("discriminator", self.discriminator),
                            ("EMA generator (g_running)", self.g_running)):
            if not weights_finite(model):
                raise TrainError(f"training diverged by iteration {self.iteration}: the {name} has NaN or infinite "
                                 f"weights; {self.last_checkpoint_text()} (resume from it with a lower --lr, for "
                                 "instance)")

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint/NNNNNN.pt`` (rank 0; every rank must call it). Readable by ``checkpoint.load`` too.
        Never with diverged weights (:meth:`check_finite` raises first)."""
        self.check_finite()
        distributed.check_in_sync({"generator": self.generator, "discriminator": self.discriminator}, self.info)
        training = self.training_state()
        path = self.checkpoint_dir / f"{self.iteration:06d}.pt"

        def write() -> None:
            data = {"format": ckpt.FORMAT, "version": ckpt.VERSION,
                    "models": {"generator": _model_entry(self.generator),
                               "discriminator": _model_entry(self.discriminator),
                               "g_running": _model_entry(self.g_running)},
                    "training": training}
            try:
                ckpt.atomic_save(data, path)
            except OSError as error:  # the disk is full, say: the previous checkpoints are intact
                raise TrainError(f"cannot write the checkpoint {path}: {error}") from None

        self._on_main(write)
        self.last_checkpoint = path
        return path

    def _on_main(self, action):
        """``action()`` on rank 0 (its result there, ``None`` elsewhere); every rank waits for it and raises its
        :class:`TrainError`, if any (collective: every rank must call it)."""
        result = problem = None
        if self.info.is_main:
            try:
                result = action()
            except TrainError as error:
                problem = str(error)
        problem = distributed.first_problem(problem, self.info)
        if problem is not None:
            raise TrainError(problem)
        return result

    # -------------------------------------------------------------------------------------------------- data

    def _local_batch(self) -> int:
        return self.schedule.batch_at(self.progress.resolution) // self.info.world_size

    def _start_resolution(self) -> None:
        resolution = self.progress.resolution
        self.dataset.resolution = resolution
        batches = ResumableBatches(len(self.dataset), self._local_batch(), self.config.seed, resolution,
                                   self.info.rank, self.info.world_size, self.data_position)
        workers = self.config.num_workers
        if workers is None:
            workers = 0 if self.device.type == "cpu" else min(4, os.cpu_count() or 1)
        loader = DataLoader(_FlippableImages(self.dataset), batch_sampler=batches, num_workers=workers,
                            pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                            worker_init_fn=_ignore_stop_signals)
        self._loader_iter, self._loader_resolution = iter(loader), resolution
        lr = self.schedule.lr_at(resolution)
        for optimizer in (self.g_optimizer, self.d_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("mult", 1)

    def _close_loader(self) -> None:
        """Stop the data loader's workers now (a later batch starts a new loader where this one stopped). Left to
        garbage collection, workers that an error's traceback keeps alive outlive the run, and as they ignore SIGTERM
        the interpreter's exit waits for them forever."""
        shutdown_workers = getattr(self._loader_iter, "_shutdown_workers", None)  # multi-process loaders only
        if shutdown_workers is not None:
            shutdown_workers()
        self._loader_iter = self._loader_resolution = None

    def _next_batch(self) -> torch.Tensor:
        if self._loader_resolution != self.progress.resolution:
            self._start_resolution()
        real = next(self._loader_iter)
        self.data_position += real.shape[0]
        return real.to(self.device, non_blocking=True, memory_format=self.memory_format)

    # -------------------------------------------------------------------------------------------------- steps

    def train_step(self, real: torch.Tensor, step: int, alpha: float) -> dict:
        """One D step and one G step, then the EMA (:func:`stylegan_cuda.train.step.train_step`)."""
        return train_step(self.generator, self.discriminator, self.g_optimizer, self.d_optimizer, real, step, alpha,
                          self.step_config, g_running=self.g_running, d_scaler=self.d_scaler, g_scaler=self.g_scaler,
                          reduce_gradients=self._all_reduce_gradients)

    def _all_reduce_gradients(self, params) -> None:
        distributed.all_reduce_gradients(params, self.info)

    # ------------------------------------------------------------------------------------------------ samples

    @torch.no_grad()
    def sample_images(self, step: int, alpha: float) -> tuple[torch.Tensor, int]:
        """The EMA generator's images for the run's fixed latents and noise; ``(images, images per row)``."""
        resolution = 4 * 2**step
        ncol, nrow = SAMPLE_GRID.get(resolution, SAMPLE_GRID_DEFAULT)
        count = ncol * nrow
        generator = torch.Generator().manual_seed(self.config.seed + 12345)
        latents = torch.randn(count, self.config.code_dim, generator=generator)
        noise = [torch.randn(count, 1, r, r, generator=torch.Generator().manual_seed(self.config.seed * 31 + r))
                 for r in RESOLUTIONS[: step + 1]]
        chunk = max(1, self.schedule.batch_at(resolution))
        images = []
        for start in range(0, count, chunk):
            part = slice(start, start + chunk)
            images.append(self.g_running(latents[part].to(self.device), step=step, alpha=alpha,
                                         noise=[n[part].to(self.device) for n in noise]).float().cpu())
        return torch.cat(images), ncol

    def write_sample(self, alpha: float) -> Path | None:
        """Write the sample grid (rank 0, which returns its path; every rank must call it)."""
        return self._on_main(lambda: self._write_sample_on_main(alpha))

    def _write_sample_on_main(self, alpha: float) -> Path:
        images, ncol = self.sample_images(self.progress.step, alpha)
        path = self.sample_dir / f"{self.iteration:06d}.png"
        try:
            return save_grid(images, path, ncol)
        except OSError as error:
            raise TrainError(f"cannot write the sample grid {path}: {error}") from None

    # --------------------------------------------------------------------------------------------------- loop

    def prepare_output(self) -> None:
        """Create the output folders (rank 0); every rank raises rank 0's error, if any, rather than wait for it."""
        self._on_main(self._prepare_output_on_main)

    def _prepare_output_on_main(self) -> None:
        later = [path for iteration, path in ckpt.run_checkpoints(self.checkpoint_dir) if iteration > self.iteration]
        if later:
            raise TrainError(f"--out {self.out} holds checkpoints past iteration {self.iteration} (up to "
                             f"{later[-1].name}) that this run would write over: continue from the latest with "
                             f"--resume {self.out}, or give another --out")
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            self.sample_dir.mkdir(parents=True, exist_ok=True)
            args = json.dumps(self.config.resumable(), indent=1, sort_keys=True)
            tmp = self.out / f".train_args.json.tmp{os.getpid()}"
            tmp.write_text(args + "\n")
            os.replace(tmp, self.out / "train_args.json")
        except OSError as error:
            raise TrainError(f"--out {self.out}: cannot write the output folders: {error}") from None

    def train_iteration(self) -> dict:
        """One iteration; a :class:`DatasetError` (on every rank, whichever read the record) leaves the run where the
        previous iteration left it."""
        before = dataclasses.replace(self.progress), self.data_position
        alpha, stepped = self.progress.begin_iteration(self.schedule)
        if stepped:
            self.data_position = 0
            self.log(f"[{self.iteration:06d}] now at {self.progress.resolution} px "
                     f"(batch {self.schedule.batch_at(self.progress.resolution)}, "
                     f"lr {self.schedule.lr_at(self.progress.resolution):g})")
        real = problem = None
        try:
            real = self._next_batch()
        except DatasetError as error:
            problem = error.problem
        problem = distributed.first_problem(problem, self.info)
        if problem is not None:
            self.progress, self.data_position = before
            raise DatasetError(problem)
        losses = self.train_step(real, self.progress.step, alpha)
        self.progress.end_iteration(real.shape[0] * self.info.world_size)
        self.iteration += 1
        self.last_alpha = alpha
        losses["alpha"] = torch.tensor(alpha)
        return losses

    def run(self) -> Path | None:
        """Train until ``config.iterations``; returns the last checkpoint written (``None`` if nothing ran)."""
        config = self.config
        self.prepare_output()
        if self.iteration >= config.iterations:
            self.log(f"already at iteration {self.iteration} >= --iterations {config.iterations}: nothing to do")
            return None
        layout = ", channels_last" if config.channels_last else ""
        self.log(f"training {config.init_size} -> {config.max_size} px on {self.device} x{self.info.world_size} "
                 f"({config.loss}, amp {config.amp}{layout}, impl {config.impl}); starting at iteration "
                 f"{self.iteration}, {self.progress.resolution} px, {self.progress.used_sample} images into it")
        try:
            with StopRequest(repeat_stops_at_once=not self.info.enabled) as stop:
                self._loop(stop)
        except distributed.DistributedError as error:
            raise TrainError(f"{error}; {self.last_checkpoint_text()}") from None
        finally:
            self._close_loader()
        if self.stopped_by is not None:
            self.log(f"[{self.iteration:06d}] stopped by {signal.Signals(self.stopped_by).name}: checkpoint "
                     f"{self.last_checkpoint}; --resume {self.out} continues")
        else:
            self.log(f"done: {self.iteration} iterations, checkpoint {self.last_checkpoint}")
        return self.last_checkpoint

    def _loop(self, stop: StopRequest) -> None:
        """The iterations, until ``config.iterations`` or a stop signal (on any rank), ending with a checkpoint."""
        config = self.config
        saved_at = -1
        timer, images_since = time.perf_counter(), 0
        started = timer
        while self.iteration < config.iterations:
            self.stopped_by = distributed.max_over_ranks(stop.signum or 0, self.info) or None
            if self.stopped_by is not None:
                break
            try:
                losses = self.train_iteration()
            except DatasetError as error:
                raise self._dataset_failure(error, saved_at) from None
            images_since += self.schedule.batch_at(self.progress.resolution)
            it = self.iteration
            if self.on_iteration is not None:
                self.on_iteration(it, {k: float(v) for k, v in losses.items()})
            if it % config.log_every == 0 or it == config.iterations:
                self.check_finite()
                mean = distributed.mean_over_ranks({k: v for k, v in losses.items() if k != "alpha"}, self.info)
                now = time.perf_counter()
                rate = images_since / max(now - timer, 1e-9)
                timer, images_since = now, 0
                self.log(f"[{it:06d}] {self.progress.resolution:4d} px alpha {float(losses['alpha']):.3f} | "
                         f"D {float(mean['d']):.4f} G {float(mean['g']):.4f} penalty {float(mean['penalty']):.4f} | "
                         f"{rate:.1f} img/s | {_duration(now - started)}")
            if it % config.sample_every == 0 or it == config.iterations:
                self.write_sample(float(losses["alpha"]))
            will_step = self.progress.used_sample > 2 * self.schedule.phase and not self.progress.final \
                and self.progress.step < self.schedule.max_step
            if it % config.save_every == 0 or it == config.iterations or will_step:
                self.save_checkpoint()
                saved_at = it
                if will_step:
                    self.log(f"[{it:06d}] finished {self.progress.resolution} px: {self.last_checkpoint}")
        if saved_at != self.iteration:
            self.save_checkpoint()

    def _dataset_failure(self, error: DatasetError, saved_at: int) -> TrainError:
        """The error that ends a run on a damaged image record (every rank's), after a checkpoint of the iterations
        done."""
        if saved_at != self.iteration:
            self.save_checkpoint()
        return TrainError(f"dataset: {error.problem}; {self.last_checkpoint_text()}: repair the database (or prepare "
                          f"it again with prepare_data.py) and continue with --resume {self.out}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ------------------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train StyleGAN (v1) with progressive growing on a multi-resolution LMDB made by prepare_data.py. "
                    "Options left out of a --resume run are taken from its checkpoint.",
    )
    d = DEFAULTS
    p.add_argument("dataset", nargs="?", metavar="DATASET_LMDB", help="database made by prepare_data.py")
    p.add_argument("--out", help=f"output folder; DIR/checkpoint and DIR/sample are created (default {d['out']})")
    p.add_argument("--resume", metavar="PATH", help="checkpoint to continue from: DIR/checkpoint/NNNNNN.pt, a "
                   "folder (its latest checkpoint), or the seed's train_step-N.model (weights only)")
    p.add_argument("--iterations", type=int, help=f"stop after this many iterations in all (default {d['iterations']})")
    g = p.add_argument_group("progressive growing")
    g.add_argument("--phase", type=int, help=f"images per fade-in, and per stable stage (default {d['phase']})")
    g.add_argument("--init_size", type=int, help=f"first resolution (default {d['init_size']})")
    g.add_argument("--max_size", type=int, help=f"last resolution (default {d['max_size']})")
    g.add_argument("--lr", type=float, help=f"learning rate (default {d['lr']}; with --sched, of the resolutions "
                   "the seed's table leaves out)")
    g.add_argument("--batch", type=int, help=f"batch over all processes (default {d['batch']}; with --sched, of the "
                   "resolutions the seed's table leaves out)")
    g.add_argument("--sched", action=argparse.BooleanOptionalAction, help="the seed's learning-rate and batch table")
    g = p.add_argument_group("losses")
    g.add_argument("--loss", choices=LOSSES, help=f"(default {d['loss']}, as the seed)")
    g.add_argument("--r1_gamma", type=float,
                   help=f"R1 weight gamma (penalty gamma/2 |grad|^2; default {d['r1_gamma']})")
    g.add_argument("--gp_weight", type=float, help=f"WGAN-GP weight (default {d['gp_weight']})")
    g.add_argument("--mixing", action=argparse.BooleanOptionalAction,
                   help="mixing regularization: two latents with probability 0.9")
    g.add_argument("--ema_decay", type=float, help=f"EMA generator decay (default {d['ema_decay']})")
    g = p.add_argument_group("model size (fixed by the checkpoint when resuming)")
    g.add_argument("--channel_base", type=int, help=f"channels at resolution r: min(max_channels, channel_base / r) "
                   f"(default {d['channel_base']})")
    g.add_argument("--max_channels", type=int, help=f"(default {d['max_channels']})")
    g.add_argument("--code_dim", type=int, help=f"latent and style size (default {d['code_dim']})")
    g.add_argument("--n_mlp", type=int, help=f"mapping network layers (default {d['n_mlp']})")
    g.add_argument("--from_rgb_activate", action=argparse.BooleanOptionalAction,
                   help="leaky ReLU after the discriminator's from_rgb (default on, as the seed's train.py)")
    g = p.add_argument_group("running")
    g.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda, cuda:N (default auto)")
    g.add_argument("--impl", choices=IMPLS, help="ops: compiled kernels (extension), the pure-PyTorch reference, or "
                   "auto: the kernels where they build (default: $STYLEGAN_CUDA_IMPL, else auto)")
    g.add_argument("--amp", choices=AMP_MODES, help="mixed precision of the forward passes "
                   "(fp16 with loss scaling; default off)")
    g.add_argument("--channels_last", action="store_true",
                   help="weights and images in channels_last memory format (NHWC): the same math, faster convolutions "
                        "on recent GPUs, with --amp above all")
    g.add_argument("--num_workers", type=int, help="data loader processes (default 0 on the CPU, 4 on a GPU)")
    g.add_argument("--seed", type=int, help=f"random seed (default {d['seed']})")
    g.add_argument("--sample_every", type=int, help=f"sample grid every N iterations (default {d['sample_every']})")
    g.add_argument("--save_every", type=int, help=f"checkpoint every N iterations (default {d['save_every']})")
    g.add_argument("--log_every", type=int, help=f"log line every N iterations (default {d['log_every']})")
    return p


def make_config(argv=None, impl_for_loading: str | None = None) -> tuple[TrainConfig, ResumeSource | None]:
    """Parse the command line; with ``--resume``, fill the options left out from the checkpoint."""
    args = vars(build_parser().parse_args(argv))
    try:
        args["impl"] = check_impl(args["impl"])  # None: STYLEGAN_CUDA_IMPL, else auto
    except ValueError as error:
        raise TrainError(str(error)) from None
    resume = None
    given = {k: v for k, v in args.items() if v is not None}
    values = dict(DEFAULTS)
    if args["resume"]:
        resume = read_resume(args["resume"], impl=impl_for_loading or args["impl"])
        model_config = {**resume.models["generator"].config, **resume.models["discriminator"].config}
        if resume.training is not None:
            values.update(resume.training["args"])
        elif resume.init_size is not None and "init_size" not in given:
            values["init_size"] = resume.init_size
        for key in MODEL_OPTIONS:
            if key in given and given[key] != model_config[key]:
                raise TrainError(f"--{key} {given[key]} differs from the checkpoint's {model_config[key]} "
                                 f"({resume.path}); leave it out when resuming")
            values[key] = model_config[key]
    values.update(given)
    for key in ("dataset", "out"):  # absolute, so that a resumed run finds them from any folder
        if values.get(key) is not None:
            values[key] = os.path.abspath(values[key])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in fields}), resume


def main(argv=None) -> int:
    info = DistInfo()
    try:
        config, resume = make_config(argv)
        info, device = distributed.init(config.device)
        if device.type == "cpu":
            # Subnormal floats appear in training and make CPU kernels up to 100x slower (32 px, batch 16: 6 s per
            # iteration instead of 0.1 s); flushing them to zero changes nothing else.
            torch.set_flush_denormal(True)
        if resume is not None and resume.training is None:
            print(f"note: {resume.path} holds weights but no training state: starting at {config.init_size} px "
                  "with a fade-in and fresh optimizers", file=sys.stderr)
        trainer = Trainer(config, resume, info, device)
        trainer.run()
        if trainer.stopped_by is not None:
            return 128 + trainer.stopped_by  # as if killed by it: a job scheduler sees an unfinished run
    except (TrainError, ckpt.CheckpointError, distributed.DeviceError, distributed.DistributedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted at once; the last checkpoint written is the one to --resume from", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(info)
    return 0
