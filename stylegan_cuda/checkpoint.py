"""Checkpoints: the seed's files (rosinality/style-based-gan-pytorch) and this project's own.

The seed saves ``train_step-N.model`` (a dict with ``generator``, ``discriminator``, ``g_running`` and the two
optimizers' states) and ``NNNNNN.model`` (only the EMA generator's state dict). :func:`load_rosinality` reads
either, infers each network's configuration from its keys and shapes, and returns ready models of this project
(and, when asked, the optimizers' Adam states by parameter name, for a training run to continue from).
:func:`save` / :func:`load` write and read this project's file: each model's configuration and state dict.

Every file is read with ``torch.load(weights_only=True)``: loading a checkpoint never runs code. Every state dict
is checked in full before a model is touched: a missing, unexpected or misshapen key raises
:class:`CheckpointError` naming the first such key, never leaving a half-loaded model; so does a file of this project
whose structure is wrong (``models`` not a dict, an entry without ``config``, a training state without ``progress``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .models import Discriminator, StyledGenerator
from .models.widths import MAX_STEP, RESOLUTIONS
from .ops.dispatch import check_impl

FORMAT = "stylegan_cuda"
VERSION = 1
MODEL_NAMES = ("generator", "discriminator", "g_running")
_KINDS = {"StyledGenerator": StyledGenerator, "Discriminator": Discriminator}
_BLUR_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


class CheckpointError(ValueError):
    """A file that is not a checkpoint of the expected kind, or whose keys or shapes do not fit the model."""


RUN_CHECKPOINT_NAME = re.compile(r"^(\d{6,})\.pt$")  # train.py's DIR/checkpoint/NNNNNN.pt, NNNNNN the iteration


def run_checkpoints(directory) -> list[tuple[int, Path]]:
    """The ``NNNNNN.pt`` files of ``directory`` as (iteration, path), in iteration order (none if it is missing)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := RUN_CHECKPOINT_NAME.match(p.name)))


def find(path) -> Path:
    """``path`` if it is a file; for a folder, its latest ``NNNNNN.pt``, or that of its ``checkpoint/`` subfolder (a
    ``train.py --out`` folder)."""
    path = Path(path)
    if path.is_dir():
        found = run_checkpoints(path) or run_checkpoints(path / "checkpoint")
        if not found:
            raise CheckpointError(f"{path}: the folder holds no checkpoint NNNNNN.pt written by train.py")
        return found[-1][1]
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    return path


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_PROTOCOL = b"\x80"  # the legacy format: a pickle of protocol 2 or later


def read(path) -> object:
    """``torch.load(path, weights_only=True)`` onto the CPU: loading never runs code. A file that cannot be read, or is
    not a PyTorch file of tensors and plain containers, raises :class:`CheckpointError` saying which and why."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)  # enough to show what the file is
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
    if head and not head.startswith((_ZIP_MAGIC, _PICKLE_PROTOCOL)):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: torch.save writes a ZIP archive (or, before "
                              f"PyTorch 1.6, a pickle), and this file begins with {head!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
    except Exception as error:  # the unpickler's many error types, e.g. an object that is not a tensor
        raise CheckpointError(f"{path} is not a PyTorch checkpoint of tensors: {_load_failure(error)}") from None


def _load_failure(error: Exception) -> str:
    """The reason in torch.load's error, without its advice to load with ``weights_only=False`` (which would run
    whatever code the file holds) and without the advice that follows the ZIP reader's errors."""
    if isinstance(error, EOFError):
        return "the file is empty or cut short"
    text = str(error) or type(error).__name__
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = text.split(" This is an internal miniz error.", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _require(state: dict, key: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"missing key {key!r}")
    value = state[key]
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"key {key!r} holds a {type(value).__name__}, not a tensor")
    return value


# (seed key, our key); our key None marks one of the seed's fixed blur buffers, which must hold the binomial kernel.
Layout = Iterator[tuple[str, str | None]]


def _equalized(seed_prefix: str, ours: str) -> Layout:
    """The seed's ``EqualConv2d`` / ``EqualLinear`` (an inner module holding ``weight_orig`` and ``bias``)."""
    yield f"{seed_prefix}.weight_orig", f"{ours}.weight"
    yield f"{seed_prefix}.bias", f"{ours}.bias"


def _plain(seed_prefix: str, ours: str) -> Layout:
    """The seed's ``FusedUpsample`` / ``FusedDownsample`` (``weight`` and ``bias`` scaled in forward)."""
    yield f"{seed_prefix}.weight", f"{ours}.weight"
    yield f"{seed_prefix}.bias", f"{ours}.bias"


def _blur(seed_prefix: str) -> Layout:
    yield f"{seed_prefix}.weight", None
    yield f"{seed_prefix}.weight_flip", None


def _generator_layout(model: StyledGenerator) -> Layout:
    for j in range(len(model.mapping.layers)):
        yield from _equalized(f"style.{2 * j + 1}.linear", f"mapping.layers.{j}")
    for i, block in enumerate(model.synthesis.blocks):
        seed, ours = f"generator.progression.{i}", f"synthesis.blocks.{i}"
        if block.upsample is None:
            yield f"{seed}.conv1.input", f"{ours}.const"
        elif block.upsample == "fused":
            yield from _plain(f"{seed}.conv1.0", f"{ours}.conv1")
            yield from _blur(f"{seed}.conv1.1")
        else:
            yield from _equalized(f"{seed}.conv1.1.conv", f"{ours}.conv1")
            yield from _blur(f"{seed}.conv1.2")
        for k in (1, 2):
            yield f"{seed}.noise{k}.weight_orig", f"{ours}.adain{k}.noise_weight"
            yield f"{seed}.adain{k}.style.linear.weight_orig", f"{ours}.adain{k}.style_weight"
            yield f"{seed}.adain{k}.style.linear.bias", f"{ours}.adain{k}.style_bias"
            if k == 1:
                yield from _equalized(f"{seed}.conv2.conv", f"{ours}.conv2")
    for i in range(len(model.synthesis.to_rgb)):
        yield from _equalized(f"generator.to_rgb.{i}.conv", f"synthesis.to_rgb.{i}")


def _discriminator_layout(model: Discriminator) -> Layout:
    for p, block in enumerate(model.blocks):
        yield from _equalized(f"progression.{p}.conv1.0.conv", f"blocks.{p}.conv1")
        if p == MAX_STEP:
            yield from _equalized(f"progression.{p}.conv2.0.conv", f"blocks.{p}.conv2")
            continue
        yield from _blur(f"progression.{p}.conv2.0")
        if block.fused:
            yield from _plain(f"progression.{p}.conv2.1", f"blocks.{p}.conv2")
        else:
            yield from _equalized(f"progression.{p}.conv2.1.conv", f"blocks.{p}.conv2")
    inner = ".0" if model.config["from_rgb_activate"] else ""
    for p in range(len(model.from_rgb)):
        yield from _equalized(f"from_rgb.{p}{inner}.conv", f"from_rgb.{p}")
    yield from _equalized("linear.linear", "linear")


def _widths_from(channels: list[int]) -> dict:
    """``channel_base`` and ``max_channels`` giving ``channels`` (4 px first); the shape check catches a misfit."""
    max_channels = channels[0]
    return dict(channel_base=min(channels[-1], max_channels) * RESOLUTIONS[-1], max_channels=max_channels)


def _generator_config(state: dict) -> dict:
    mapping = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"style\.(\d+)\.linear\.weight_orig", k)))
    if not mapping:
        raise CheckpointError("missing key 'style.1.linear.weight_orig': not a generator of the seed")
    code_dim = _require(state, "style.1.linear.weight_orig").shape[1]
    channels = [_require(state, f"generator.to_rgb.{i}.conv.weight_orig").shape[1] for i in range(MAX_STEP + 1)]
    fused = "generator.progression.5.conv1.0.weight" in state
    return dict(code_dim=code_dim, n_mlp=len(mapping), fused=fused, **_widths_from(channels))


def _discriminator_config(state: dict) -> dict:
    activate = "from_rgb.0.0.conv.weight_orig" in state
    inner = ".0" if activate else ""
    channels = [_require(state, f"from_rgb.{p}{inner}.conv.weight_orig").shape[0] for p in range(MAX_STEP + 1)]
    fused = "progression.0.conv2.1.weight" in state
    return dict(fused=fused, from_rgb_activate=activate, **_widths_from(channels[::-1]))


def _converted_state(model: nn.Module, layout: Layout, seed_state: dict) -> dict:
    """Our state dict from the seed's, checked key by key in the seed's order; the first misfit raises."""
    ours = model.state_dict()
    converted, expected = {}, set()
    for seed_key, our_key in layout:
        expected.add(seed_key)
        value = _require(seed_state, seed_key)
        if our_key is None:
            channels = value.shape[0] if value.dim() == 4 else -1
            kernel = _BLUR_KERNEL.expand(max(channels, 0), 1, 3, 3)
            if value.shape != kernel.shape or not torch.allclose(value.float(), kernel):
                raise CheckpointError(f"key {seed_key!r} is not the seed's fixed 3x3 binomial blur kernel")
            continue
        target = ours[our_key]
        # The seed's noise weights are [1, C, 1, 1]; ours are [C].
        seed_shape = (1, target.numel(), 1, 1) if our_key.endswith("noise_weight") else tuple(target.shape)
        if tuple(value.shape) != seed_shape:
            raise CheckpointError(
                f"key {seed_key!r} has shape {list(value.shape)}, the model needs {list(seed_shape)}"
            )
        if not value.is_floating_point():
            raise CheckpointError(f"key {seed_key!r} holds {value.dtype}, expected floating point")
        converted[our_key] = value.reshape(target.shape).to(target.dtype)
    for key in seed_state:
        if key not in expected:
            raise CheckpointError(f"unexpected key {key!r}")
    return converted


def _convert_adam_state(optimizer: dict, seed_state: dict, model: nn.Module, layout: Layout,
                        group_prefixes: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]] | None:
    """The seed's Adam state for ``model``, keyed by this project's parameter names (``None``: the file has none).

    The seed's optimizer numbers its parameters group after group, each group in ``parameters()`` order, which is the
    order of the parameter keys (all but the blur buffers) in its state dict; ``group_prefixes`` names the seed keys
    of each group. Parameters that never had a gradient have no state: Adam starts them afresh.
    """
    if not isinstance(optimizer, dict) or not optimizer.get("param_groups"):
        return None
    groups, states = optimizer["param_groups"], optimizer.get("state", {})
    if not isinstance(groups, list) or not isinstance(states, dict):
        raise CheckpointError("not an optimizer state: expected a list of param_groups and a dict of states")
    if len(groups) != len(group_prefixes):
        raise CheckpointError(f"{len(groups)} parameter group(s), the seed's optimizer has {len(group_prefixes)}")
    ours = dict(layout)
    parameters = dict(model.named_parameters())
    converted = {}
    for number, (group, prefix) in enumerate(zip(groups, group_prefixes)):
        keys = [k for k in seed_state if k.startswith(prefix) and ours.get(k) is not None]
        indices = group.get("params", []) if isinstance(group, dict) else []
        if len(indices) != len(keys):
            raise CheckpointError(f"parameter group {number} holds {len(indices)} parameters, the model has "
                                  f"{len(keys)}")
        for index, seed_key in zip(indices, keys):
            state = states.get(index)
            if state is None:
                continue
            if not isinstance(state, dict) or not {"step", "exp_avg", "exp_avg_sq"} <= set(state):
                raise CheckpointError(f"the state of parameter {index} ({seed_key!r}) is not Adam's")
            target = parameters[ours[seed_key]]
            moments = {}
            for name in ("exp_avg", "exp_avg_sq"):
                value = state[name]
                if not isinstance(value, torch.Tensor) or value.shape != seed_state[seed_key].shape:
                    raise CheckpointError(f"{name} of parameter {index} ({seed_key!r}) does not have the shape "
                                          f"{list(seed_state[seed_key].shape)} of that parameter")
                moments[name] = value.reshape(target.shape).to(target.dtype)
            try:
                step = torch.tensor(float(state["step"]))
            except (TypeError, ValueError, RuntimeError):
                raise CheckpointError(f"the step of parameter {index} ({seed_key!r}) is not a number") from None
            converted[ours[seed_key]] = {"step": step, **moments}
    return converted


def load_adam_states(optimizer: torch.optim.Optimizer, model: nn.Module, states: dict[str, dict]) -> None:
    """Give ``optimizer`` (which trains ``model``) the Adam states of ``states``, keyed by parameter name."""
    names = {id(param): name for name, param in model.named_parameters()}
    order = [names[id(param)] for group in optimizer.param_groups for param in group["params"]]
    full = optimizer.state_dict()
    full["state"] = {index: states[name] for index, name in enumerate(order) if name in states}
    optimizer.load_state_dict(full)  # moves and casts the moments to each parameter's device and dtype


def _strip_data_parallel(state: dict) -> dict:
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def convert_generator(seed_state: dict, impl: str | None = None) -> StyledGenerator:
    """A :class:`StyledGenerator` holding the seed ``StyledGenerator``'s state dict."""
    seed_state = _strip_data_parallel(seed_state)
    model = StyledGenerator(**_generator_config(seed_state), impl=impl)
    model.load_state_dict(_converted_state(model, _generator_layout(model), seed_state))
    return model


def convert_discriminator(seed_state: dict, impl: str | None = None) -> Discriminator:
    """A :class:`Discriminator` holding the seed ``Discriminator``'s state dict."""
    seed_state = _strip_data_parallel(seed_state)
    model = Discriminator(**_discriminator_config(seed_state), impl=impl)
    model.load_state_dict(_converted_state(model, _discriminator_layout(model), seed_state))
    return model


# The seed's optimizers: which models they train and the key prefix of each of their parameter groups.
_SEED_OPTIMIZERS = {
    "g_optimizer": ("generator", _generator_layout, ("generator.", "style.")),  # synthesis, then mapping (lr x 0.01)
    "d_optimizer": ("discriminator", _discriminator_layout, ("",)),
}


def load_rosinality(path, impl: str | None = None, optimizers: bool = False) -> dict[str, object]:
    """Read a checkpoint of rosinality/style-based-gan-pytorch: ``train_step-N.model`` or ``NNNNNN.model``.

    Returns ``{"generator", "discriminator", "g_running"}``, each a model of this project or ``None`` where the file
    lacks it (an ``NNNNNN.model`` holds only ``g_running``). With ``optimizers``, also ``"g_optimizer"`` and
    ``"d_optimizer"``: the Adam state of each parameter (``step``, ``exp_avg``, ``exp_avg_sq``) keyed by this
    project's parameter names, or ``None`` where the file has none.
    """
    impl = check_impl(impl)  # before the file is read
    return rosinality_from_data(read(path), path, impl, optimizers)


def rosinality_from_data(data: object, path, impl: str | None = None, optimizers: bool = False) -> dict[str, object]:
    """:func:`load_rosinality` of a file already read with ``torch.load(..., weights_only=True)`` (``path`` for
    the error messages)."""
    check_impl(impl)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint of the seed")
    if "generator.progression.0.conv1.input" in _strip_data_parallel(data):
        models = {"generator": None, "discriminator": None, "g_running": convert_generator(data, impl)}
        return {**models, **dict.fromkeys(_SEED_OPTIMIZERS)} if optimizers else models
    if not any(name in data for name in MODEL_NAMES):
        raise CheckpointError(
            f"{path} is not a checkpoint of the seed: expected the keys {', '.join(MODEL_NAMES)} (train_step-N.model) "
            "or a generator state dict (NNNNNN.model)"
        )
    converters = {"generator": convert_generator, "discriminator": convert_discriminator,
                  "g_running": convert_generator}
    models = {}
    for name, convert in converters.items():
        state = data.get(name)
        if state is not None and not isinstance(state, dict):
            raise CheckpointError(f"{path}: {name!r} holds a {type(state).__name__}, not a state dict")
        try:
            models[name] = None if state is None else convert(state, impl)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {name}: {error}") from error
    if optimizers:
        for name, (model_name, layout, group_prefixes) in _SEED_OPTIMIZERS.items():
            model = models[model_name]
            try:
                models[name] = None if model is None else _convert_adam_state(
                    data.get(name), _strip_data_parallel(data[model_name]), model, layout(model), group_prefixes)
            except CheckpointError as error:
                raise CheckpointError(f"{path}: {name}: {error}") from error
    return models


def save(path, **models: nn.Module | None) -> None:
    """Write this project's checkpoint: each given model's kind, configuration and state dict (atomically)."""
    unknown = set(models) - set(MODEL_NAMES)
    if unknown:
        raise ValueError(f"models are named {', '.join(MODEL_NAMES)}, got {', '.join(sorted(unknown))}")
    entries = {}
    for name, model in models.items():
        if model is None:
            continue
        kind = type(model).__name__
        if kind not in _KINDS:
            raise TypeError(f"{name} must be a StyledGenerator or a Discriminator, got {kind}")
        entries[name] = {"kind": kind, "config": dict(model.config), "state_dict": model.state_dict()}
    atomic_save({"format": FORMAT, "version": VERSION, "models": entries}, path)


def atomic_save(obj, path) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path``: a reader finds
    the old file or the new one, never half of one, and a failed write leaves no temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_state(model: nn.Module, state: dict) -> None:
    expected = model.state_dict()
    for key, target in expected.items():
        value = _require(state, key)
        if value.shape != target.shape:
            raise CheckpointError(f"key {key!r} has shape {list(value.shape)}, the model needs {list(target.shape)}")
    for key in state:
        if key not in expected:
            raise CheckpointError(f"unexpected key {key!r}")


def load(path, impl: str | None = None) -> dict[str, nn.Module | None]:
    """Read a checkpoint written by :func:`save`: ``{"generator", "discriminator", "g_running"}``, ``None`` if absent.

    A trainer's state (``training``) is checked by :func:`check_training_state`, then left to its readers.
    """
    impl = check_impl(impl)  # before the file is read
    return load_from_data(read(path), path, impl)


def load_from_data(data: object, path, impl: str | None = None) -> dict[str, nn.Module | None]:
    """:func:`load` of a file already read with ``torch.load(..., weights_only=True)`` (``path`` for the errors)."""
    check_impl(impl)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (for the seed's files use load_rosinality)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path} has version {data.get('version')!r}; this code reads version {VERSION}")
    entries = data.get("models")
    if not isinstance(entries, dict):
        raise CheckpointError(f"{path}: 'models' is of type {type(entries).__name__}, not a dict of model entries")
    if data.get("training") is not None:
        check_training_state(data["training"], path)
    models = dict.fromkeys(MODEL_NAMES)
    for name, entry in entries.items():
        if name not in MODEL_NAMES or not isinstance(entry, dict) or entry.get("kind") not in _KINDS:
            raise CheckpointError(f"{path}: {name!r} is not a model entry of this project")
        for key in ("config", "state_dict"):
            if not isinstance(entry.get(key), dict):
                raise CheckpointError(f"{path}: {name}: {key!r} is missing or not a dict")
        try:
            model = _KINDS[entry["kind"]](**entry["config"], impl=impl)
        except (TypeError, ValueError, RuntimeError, ArithmeticError) as error:
            raise CheckpointError(f"{path}: {name}: its config does not make a model: {error}") from error
        try:
            _check_state(model, entry["state_dict"])
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {name}: {error}") from error
        model.load_state_dict(entry["state_dict"])
        models[name] = model
    return models


# The entries of train.py's training state that its readers (train.py --resume, generate.py) use, and their types:
# required, optional (absent or None), and those of its "progress".
_NUMBER = (int, float)
_TRAINING_ENTRIES = {"iteration": int, "data_position": int, "progress": dict, "args": dict, "g_optimizer": dict,
                     "d_optimizer": dict}
_OPTIONAL_TRAINING_ENTRIES = {"alpha": _NUMBER, "last_alpha": _NUMBER, "rng": list, "g_scaler": dict,
                              "d_scaler": dict, "world_size": int}
_PROGRESS_ENTRIES = {"step": int, "used_sample": int, "final": bool}


def check_training_state(training: object, path) -> None:
    """Raise :class:`CheckpointError` naming ``path`` and the first entry of train.py's training state that is
    missing, of the wrong type or out of range, so that no reader meets a half-valid state."""
    if not isinstance(training, dict):
        raise CheckpointError(f"{path}: 'training' is of type {type(training).__name__}, not train.py's training state")
    optional = {key: kind for key, kind in _OPTIONAL_TRAINING_ENTRIES.items() if training.get(key) is not None}
    _check_types(training, {**_TRAINING_ENTRIES, **optional}, "", path)
    progress = training["progress"]
    _check_types(progress, _PROGRESS_ENTRIES, "progress.", path)
    counts = {"iteration": training["iteration"], "data_position": training["data_position"],
              "progress.used_sample": progress["used_sample"]}
    for name, value in counts.items():
        if value < 0:
            raise CheckpointError(f"{path}: the training state's {name} is {value}, not a count")
    if "world_size" in optional and training["world_size"] < 1:
        raise CheckpointError(f"{path}: the training state's world_size is {training['world_size']}, not a number of "
                              "processes")
    if not 0 <= progress["step"] <= MAX_STEP:
        raise CheckpointError(f"{path}: the training state's progress.step is {progress['step']}: steps are 0 to "
                              f"{MAX_STEP} ({RESOLUTIONS[0]} to {RESOLUTIONS[-1]} px)")
    for name in ("alpha", "last_alpha"):
        if name in optional and not 0 <= training[name] <= 1:
            raise CheckpointError(f"{path}: the training state's {name} is {training[name]}, not a fade-in weight "
                                  "from 0 to 1")


def _check_types(entries: dict, types: dict[str, type | tuple[type, ...]], prefix: str, path) -> None:
    for key, kind in types.items():
        if key not in entries:
            raise CheckpointError(f"{path}: the training state has no {prefix}{key}")
        value = entries[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            expected = "number" if kind is _NUMBER else kind.__name__
            raise CheckpointError(f"{path}: the training state's {prefix}{key} is of type {type(value).__name__}, "
                                  f"expected {expected}")
