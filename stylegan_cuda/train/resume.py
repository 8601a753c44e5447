"""What ``--resume`` reads (this trainer's checkpoints, model-only ones, the seed's files), and the random generators'
states that a checkpoint holds."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..models.widths import RESOLUTIONS
from .config import TrainError

# The training state a checkpoint of this trainer holds, and its layout version.
TRAINING_KIND = "stylegan_cuda.train"
TRAINING_VERSION = 1


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


def rng_state(device: torch.device) -> dict:
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


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
