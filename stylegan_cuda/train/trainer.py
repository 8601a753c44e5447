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

import contextlib
import dataclasses
import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import checkpoint as ckpt
from ..data.dataset import DatasetError
from ..generate.grid import save_grid
from ..models import Discriminator, StyledGenerator, weights_finite
from ..models.widths import RESOLUTIONS
from ..stop_signals import STOP_SIGNALS, handling_stop_signals
from . import distributed
from .batches import FlippableImages, ResumableBatches, open_dataset
from .config import TrainConfig, TrainError
from .distributed import DistInfo
from .resume import TRAINING_KIND, TRAINING_VERSION, ResumeSource, rng_state, set_rng_state
from .schedule import Progress
from .step import StepConfig, load_optimizer_state, make_optimizers, train_step

# The seed's sample grids: (images per row, rows) by resolution.
SAMPLE_GRID = {512: (8, 4), 1024: (4, 2)}
SAMPLE_GRID_DEFAULT = (10, 5)


def _model_entry(model) -> dict:
    return {"kind": type(model).__name__, "config": dict(model.config),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}


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
            set_rng_state(rng, self.device)
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
            load_optimizer_state(self.g_optimizer, training["g_optimizer"])
            load_optimizer_state(self.d_optimizer, training["d_optimizer"])
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
        rng = distributed.gather_objects(rng_state(self.device), self.info)
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
        loader = DataLoader(FlippableImages(self.dataset), batch_sampler=batches, num_workers=workers,
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
