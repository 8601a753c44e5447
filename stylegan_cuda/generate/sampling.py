"""Images from a trained generator: truncated samples and style-mixing grids, as the seed's ``generate.py``.

The resolution comes from the checkpoint (never from a guess: the seed's ``--size 1024`` default on a model trained
to 64 px drew noise). Latents and noise come from a generator seeded by ``seed``, on the CPU, so a seed gives the same
images on every device.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..models import weights_finite
from ..models.widths import MAX_STEP, RESOLUTIONS
from ..train.step import AMP_MODES, autocast

# Block ranges of the StyleGAN paper's style-mixing figure: coarse 4-8 px, middle 16-32 px, fine 64-1024 px.
NAMED_RANGES = {"coarse": (0, 1), "middle": (2, 3), "fine": (4, MAX_STEP)}
SEED_RANGE = (0, 1)
MAX_SEED = 2**63 - 1  # seed, seed + 1 and seed + 2 seed torch generators, which take at most 2**64 - 1


class GenerateError(ValueError):
    """Bad input to generation: an unreadable checkpoint, one without a generator, a size that does not fit it."""


@dataclasses.dataclass
class LoadedGenerator:
    model: torch.nn.Module
    step: int
    alpha: float
    description: str
    path: Path  # the checkpoint, for the error messages

    @property
    def resolution(self) -> int:
        return RESOLUTIONS[self.step]


def _step_of_size(size: int) -> int:
    if size not in RESOLUTIONS:
        raise GenerateError(f"--size must be one of {', '.join(map(str, RESOLUTIONS))}, got {size}")
    return RESOLUTIONS.index(size)


def _check_size(size: int | None, resolution: int, path) -> None:
    if size is not None and size != resolution:
        raise GenerateError(
            f"--size {size} does not match {path}: its generator was trained to {resolution} px. Leave --size out "
            f"(the size is read from the checkpoint); at any other size the generator draws noise"
        )


def load_generator(path, size: int | None = None, impl: str | None = None, device="cpu",
                   channels_last: bool = False) -> LoadedGenerator:
    """The EMA generator (else the generator) of ``path`` and the resolution and fade-in it was trained at, on
    ``device`` (its weights in channels_last memory format with ``channels_last``).

    Reads this project's checkpoints (``train.py``'s, which record the resolution, also found as the latest in a
    ``train.py --out`` folder; a model-only file of :func:`stylegan_cuda.checkpoint.save` needs ``size``) and the
    seed's (``train_step-N.model`` records it in its name; ``NNNNNN.model`` needs ``size``).
    """
    try:
        path = ckpt.find(path)
        data = ckpt.read(path)
    except ckpt.CheckpointError as error:
        raise GenerateError(str(error)) from None
    if not isinstance(data, dict):
        raise GenerateError(f"{path} holds a {type(data).__name__}, not a checkpoint")
    alpha, resolution = 1.0, None
    if data.get("format") == ckpt.FORMAT:
        models = ckpt.load_from_data(data, path, impl=impl)
        training = data.get("training")  # checked by load_from_data
        if training is not None:
            resolution = RESOLUTIONS[training["progress"]["step"]]
            if training.get("alpha") is not None:
                alpha = float(training["alpha"])
        kind = "train.py checkpoint" if resolution else "stylegan_cuda checkpoint"
    else:
        models = ckpt.rosinality_from_data(data, path, impl=impl)
        match = re.fullmatch(r"train_step-(\d+)\.model", path.name)
        if match and 1 <= int(match.group(1)) <= MAX_STEP + 1:
            # The seed writes train_step-N when it moves to step N: the models are trained to step N - 1.
            resolution = RESOLUTIONS[int(match.group(1)) - 1]
        kind = "checkpoint of the seed"
    model, which = (models["g_running"], "EMA generator") if models["g_running"] is not None else \
        (models["generator"], "generator")
    if model is None:
        raise GenerateError(f"{path} holds no generator (only a discriminator)")
    if not weights_finite(model):
        raise GenerateError(f"{path}: its {which} has NaN or infinite weights (did its training diverge?): no "
                            "image can be drawn from it")
    if resolution is None:
        if size is None:
            raise GenerateError(f"{path} does not record the resolution its generator was trained to: pass --size")
        resolution = size
    _check_size(size, resolution, path)
    step = _step_of_size(resolution)
    model = model.to(device).eval().requires_grad_(False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return LoadedGenerator(model, step, alpha, f"{which} of a {kind}, {resolution} px, alpha {alpha:g}", path)


def cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def mean_style(model, count: int = 10 * 1024, chunk: int = 1024, seed: int = 0, device="cpu") -> torch.Tensor:
    """The mean style ``[1, code_dim]`` of ``count`` latents (the seed: 10 x 1024), in chunks of ``chunk``."""
    if count < 1:
        raise GenerateError(f"the mean style needs at least one latent, got {count}")
    generator, code_dim = cpu_generator(seed), model.config["code_dim"]
    total, done = None, 0
    while done < count:
        n = min(chunk, count - done)
        style = model.mapping(torch.randn(n, code_dim, generator=generator).to(device)).double().sum(0, keepdim=True)
        total = style if total is None else total + style
        done += n
    return (total / count).float()


@dataclasses.dataclass
class Sampler:
    """Draws images from a :class:`LoadedGenerator` with truncation and seeded latents and noise."""

    loaded: LoadedGenerator
    truncation: float = 0.7
    seed: int = 0
    noise: str = "fixed"  # "fixed": one noise map per resolution shared by all images; "random": per image
    batch: int = 16
    n_mean: int = 10 * 1024
    device: str | torch.device = "cpu"
    amp: str = "off"  # the generator's forward passes under bf16 or fp16 autocast (the mean style stays float32)

    def __post_init__(self):
        if self.noise not in ("fixed", "random"):
            raise GenerateError(f"noise must be fixed or random, got {self.noise!r}")
        if self.amp not in AMP_MODES:
            raise GenerateError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        for name in ("batch", "n_mean"):
            if getattr(self, name) < 1:
                raise GenerateError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise GenerateError(f"seed must be from 0 to {MAX_SEED} (2**63 - 1), got {self.seed}")
        if not (math.isfinite(self.truncation) and self.truncation >= 0):
            raise GenerateError(f"truncation must be a finite number >= 0, got {self.truncation}")
        self.generator = cpu_generator(self.seed)
        self.mean = None
        if self.truncation != 1:
            self.mean = mean_style(self.loaded.model, self.n_mean, seed=self.seed + 1, device=self.device)
        step = self.loaded.step
        noise_generator = cpu_generator(self.seed + 2)
        self.fixed_noise = [torch.randn(1, 1, r, r, generator=noise_generator) for r in RESOLUTIONS[: step + 1]]

    def latents(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.loaded.model.config["code_dim"], generator=self.generator)

    def _noise(self, count: int) -> list[torch.Tensor]:
        if self.noise == "fixed":
            return [n.expand(count, -1, -1, -1).contiguous() for n in self.fixed_noise]
        return [torch.randn(count, 1, n.shape[-2], n.shape[-1], generator=self.generator) for n in self.fixed_noise]

    @torch.no_grad()
    def images(self, latents, mixing_range=(-1, -1)) -> torch.Tensor:
        """Images ``[N, 3, R, R]`` in ``[-1, 1]`` (CPU) for latents ``[N, code_dim]`` or a (target, source) pair."""
        pair = isinstance(latents, (list, tuple))
        count = (latents[0] if pair else latents).shape[0]
        noise = self._noise(count)
        out = []
        for start in range(0, count, self.batch):
            part = slice(start, start + self.batch)
            inputs = [z[part].to(self.device) for z in latents] if pair else latents[part].to(self.device)
            kwargs = {} if self.mean is None else {"mean_style": self.mean, "style_weight": self.truncation}
            with autocast(torch.device(self.device).type, self.amp):
                out.append(self.loaded.model(inputs, noise=[n[part].to(self.device) for n in noise],
                                             step=self.loaded.step, alpha=self.loaded.alpha,
                                             mixing_range=tuple(mixing_range), **kwargs).float().cpu())
        images = torch.cat(out)
        if not images.isfinite().all():
            hint = " (float16 overflows where float32 does not: try --amp bf16 or off)" if self.amp == "fp16" else ""
            raise GenerateError(f"the generator of {self.loaded.path} drew NaN or infinite pixels at truncation "
                                f"{self.truncation:g}{hint}: refusing to write them")
        return images

    def sample(self, count: int) -> torch.Tensor:
        return self.images(self.latents(count))

    def style_mixing(self, n_source: int, n_target: int, mixing_range=SEED_RANGE) -> torch.Tensor:
        """The seed's grid as a list of ``(n_target + 1) * (n_source + 1)`` images, row by row: a blank corner and
        the sources along the top; each row a target, then the target with blocks ``mixing_range`` taking the
        styles of each source."""
        source, target = self.latents(n_source), self.latents(n_target)
        source_images, target_images = self.images(source), self.images(target)
        resolution = self.loaded.resolution
        rows = [torch.full((1, 3, resolution, resolution), -1.0), source_images]
        for i in range(n_target):
            mixed = self.images([target[i:i + 1].expand(n_source, -1), source], mixing_range=mixing_range)
            rows += [target_images[i:i + 1], mixed]
        return torch.cat(rows)


def parse_mixing_ranges(texts, step: int) -> list[tuple[str, tuple[int, int]]]:
    """``["0,1", "coarse", "all", ...]`` -> ``[(label, (lo, hi)), ...]`` of blocks that exist at ``step``."""
    ranges = []
    for text in texts:
        names = list(NAMED_RANGES) if text == "all" else [text]
        for name in names:
            if name in NAMED_RANGES:
                low, high = NAMED_RANGES[name]
            else:
                match = re.fullmatch(r"\s*(\d+)\s*[,:-]\s*(\d+)\s*", name)
                if not match:
                    raise GenerateError(f"--mixing_range {name!r}: expected LO,HI (block indices 0-{MAX_STEP}), "
                                        f"coarse, middle, fine or all")
                low, high = int(match.group(1)), int(match.group(2))
                if low > high:
                    raise GenerateError(f"--mixing_range {name!r}: LO must be <= HI")
            if low > step:
                if text == "all":
                    continue
                raise GenerateError(f"--mixing_range {name}: blocks {low}-{high} do not exist at "
                                    f"{RESOLUTIONS[step]} px (blocks 0-{step}: 4-{RESOLUTIONS[step]} px)")
            label = name if name in NAMED_RANGES else f"{low}-{min(high, step)}"
            ranges.append((label, (low, min(high, step))))
    return ranges
