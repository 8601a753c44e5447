"""Loading the seed's checkpoints: the converted models compute the seed's function; bad files fail cleanly.

The seed's models come from seed_reference.py, an independent re-implementation of the seed's model.py whose
state dicts have the seed's exact keys and shapes.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest
import torch

import seed_reference as seed
from stylegan_cuda import checkpoint
from stylegan_cuda.checkpoint import CheckpointError, load_rosinality
from stylegan_cuda.convert import main as convert_main
from stylegan_cuda.models import MAX_STEP, RESOLUTIONS, Discriminator, StyledGenerator
from stylegan_cuda.train.config import TrainError
from stylegan_cuda.train.step import make_optimizers
from stylegan_cuda.train.resume import TRAINING_KIND, TRAINING_VERSION, read_resume
from test_models import BATCH, CODE_DIM, TINY, assert_close_scaled, randomize

SEED_TINY = dict(code_dim=CODE_DIM, n_mlp=3, **TINY)


def seed_models(fused=True, from_rgb_activate=True):
    generator = randomize(seed.StyledGenerator(fused=fused, **SEED_TINY))
    discriminator = randomize(seed.Discriminator(fused=fused, from_rgb_activate=from_rgb_activate, **TINY), seed=1)
    g_running = randomize(seed.StyledGenerator(fused=fused, **SEED_TINY), seed=2)
    return generator, discriminator, g_running


def write_train_step(path, generator, discriminator, g_running):
    torch.save({"generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                "g_optimizer": {"state": {}, "param_groups": []}, "d_optimizer": {"state": {}, "param_groups": []},
                "g_running": g_running.state_dict()}, path)


def assert_generators_agree(ours, theirs, steps=range(MAX_STEP + 1)):
    """Same images for the same latents and noise: one latent, random and explicit mixing, truncation, fade-in."""
    code_dim = ours.config["code_dim"]
    for step in steps:
        gen = torch.Generator().manual_seed(step)
        z = [torch.randn(BATCH, code_dim, generator=gen) for _ in range(2)]
        noise = [torch.randn(BATCH, 1, r, r, generator=gen) for r in RESOLUTIONS[: step + 1]]
        mean_style = theirs.mean_style(torch.randn(32, code_dim, generator=gen))
        calls = [dict(input=z[0], alpha=0.5), dict(input=z[0], alpha=1),
                 dict(input=z[0], alpha=0.3, mean_style=mean_style, style_weight=0.7)]
        if step > 0:  # the seed cannot mix two styles at 4 px
            calls += [dict(input=z, alpha=0.5), dict(input=z, alpha=1, mixing_range=(0, step // 2))]
        if step > 5:  # 256 px and up are slow on a CPU: a fade-in with one latent and explicit mixing
            calls = [calls[0], calls[-1]]
        for kwargs in calls:
            random.seed(step)
            expected = theirs(noise=noise, step=step, **kwargs)
            random.seed(step)
            actual = ours(noise=noise, step=step, **kwargs)
            assert_close_scaled(actual, expected, what=f"step {step} {sorted(kwargs)}")


def assert_discriminators_agree(ours, theirs, steps=range(MAX_STEP + 1)):
    for step in steps:
        x = torch.randn(BATCH, 3, RESOLUTIONS[step], RESOLUTIONS[step], generator=torch.Generator().manual_seed(step))
        for alpha in (0.3, 1):  # not 0.5, where the fade-in's two weights are equal
            assert_close_scaled(ours(x, step=step, alpha=alpha), theirs(x, step=step, alpha=alpha),
                                what=f"step {step} alpha {alpha}")


# Fused and not differ from 128 px up (steps 5-8): every step for the first, the differing ones for the second.
@pytest.mark.parametrize("fused,from_rgb_activate,steps",
                         [(True, True, range(MAX_STEP + 1)), (False, False, (1, 5, 7))])
def test_train_step_file_reproduces_the_seed(tmp_path, fused, from_rgb_activate, steps):
    generator, discriminator, g_running = seed_models(fused, from_rgb_activate)
    path = tmp_path / "train_step-3.model"
    write_train_step(path, generator, discriminator, g_running)
    loaded = load_rosinality(path, impl="reference")
    assert isinstance(loaded["generator"], StyledGenerator) and isinstance(loaded["discriminator"], Discriminator)
    assert loaded["generator"].config == dict(fused=fused, **SEED_TINY)
    assert loaded["discriminator"].config == dict(fused=fused, from_rgb_activate=from_rgb_activate, **TINY)
    with torch.no_grad():
        assert_generators_agree(loaded["generator"], generator, steps)
        assert_generators_agree(loaded["g_running"], g_running, steps=(2,))
        assert_discriminators_agree(loaded["discriminator"], discriminator, steps)


def adam_steps(generator, discriminator, g_optimizer, d_optimizer, steps, seed=0):
    """Adam steps of both networks on one loss through both, at 8 px, with fixed latents and noise."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        z = torch.randn(BATCH, CODE_DIM, generator=gen)
        noise = [torch.randn(BATCH, 1, r, r, generator=gen) for r in RESOLUTIONS[:2]]
        loss = discriminator(generator(z, noise=noise, step=1, alpha=1), step=1, alpha=1).square().mean()
        g_optimizer.zero_grad()
        d_optimizer.zero_grad()
        loss.backward()
        g_optimizer.step()
        d_optimizer.step()


def test_train_step_file_carries_the_seeds_adam_state(tmp_path):
    generator, discriminator, g_running = seed_models()
    g_optimizer, d_optimizer = seed.optimizers(generator, discriminator)
    adam_steps(generator, discriminator, g_optimizer, d_optimizer, steps=3)
    path = tmp_path / "train_step-1.model"
    torch.save({"generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                "g_optimizer": g_optimizer.state_dict(), "d_optimizer": d_optimizer.state_dict(),
                "g_running": g_running.state_dict()}, path)
    loaded = load_rosinality(path, impl="reference", optimizers=True)
    ours_g, ours_d = loaded["generator"], loaded["discriminator"]
    # Only the parameters that had gradients at 8 px have a state, as in the seed.
    assert "mapping.layers.0.weight" in loaded["g_optimizer"] and "synthesis.blocks.1.conv2.weight" in loaded[
        "g_optimizer"]
    assert not any(name.startswith("synthesis.blocks.2.") for name in loaded["g_optimizer"])
    assert loaded["g_optimizer"]["synthesis.blocks.0.adain1.noise_weight"]["exp_avg"].shape == (8,)
    ours_g_optimizer, ours_d_optimizer = make_optimizers(ours_g, ours_d)
    checkpoint.load_adam_states(ours_g_optimizer, ours_g, loaded["g_optimizer"])
    checkpoint.load_adam_states(ours_d_optimizer, ours_d, loaded["d_optimizer"])

    # One more step on each side moves every parameter alike: each moment reached its parameter. (With fresh
    # moments Adam's first step would be lr * sign(grad) instead.)
    seed_before = (checkpoint.convert_generator(generator.state_dict()).state_dict(),
                   checkpoint.convert_discriminator(discriminator.state_dict()).state_dict())
    ours_before = ({k: v.clone() for k, v in ours_g.state_dict().items()},
                   {k: v.clone() for k, v in ours_d.state_dict().items()})
    adam_steps(generator, discriminator, g_optimizer, d_optimizer, steps=1, seed=5)
    adam_steps(ours_g, ours_d, ours_g_optimizer, ours_d_optimizer, steps=1, seed=5)
    seed_after = (checkpoint.convert_generator(generator.state_dict()).state_dict(),
                  checkpoint.convert_discriminator(discriminator.state_dict()).state_dict())
    for before, after, ours_start, ours in zip(seed_before, seed_after, ours_before, (ours_g, ours_d)):
        for key, value in ours.state_dict().items():
            if re.fullmatch(r"synthesis\.blocks\.\d+\.conv[12]\.bias", key):
                continue  # an instance norm follows: their gradients are rounding noise, and so is Adam's step
            torch.testing.assert_close(value - ours_start[key], after[key] - before[key], rtol=1e-3, atol=1e-7,
                                       msg=lambda m, key=key: f"{key}: {m}")


def test_bad_optimizer_states(tmp_path):
    generator, discriminator, g_running = seed_models()
    g_optimizer, d_optimizer = seed.optimizers(generator, discriminator)
    adam_steps(generator, discriminator, g_optimizer, d_optimizer, steps=1)
    good = {"generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            "g_optimizer": g_optimizer.state_dict(), "d_optimizer": d_optimizer.state_dict()}
    one_group = {**good["g_optimizer"], "param_groups": good["g_optimizer"]["param_groups"][:1]}
    synthesis, mapping = good["g_optimizer"]["param_groups"]
    short_group = {**good["g_optimizer"], "param_groups": [{**synthesis, "params": synthesis["params"][:-1]}, mapping]}
    d_states = good["d_optimizer"]["state"]
    index = next(iter(d_states))  # a parameter that had a gradient at 8 px
    short_moment = {**good["d_optimizer"], "state": {**d_states, index: {**d_states[index], "exp_avg": torch.zeros(3)}}}
    listed_states = {**good["g_optimizer"], "state": list(good["g_optimizer"]["state"].values())}
    for edit, message in (({"g_optimizer": one_group}, "g_optimizer: 1 parameter group"),
                          ({"g_optimizer": short_group}, "g_optimizer: parameter group 0 holds"),
                          ({"d_optimizer": short_moment}, f"d_optimizer: exp_avg of parameter {index}"),
                          ({"g_optimizer": listed_states}, "g_optimizer: not an optimizer state")):
        path = tmp_path / "bad.model"
        torch.save({**good, **edit}, path)
        with pytest.raises(CheckpointError, match=message):
            load_rosinality(path, impl="reference", optimizers=True)
        assert load_rosinality(path, impl="reference")["generator"] is not None  # the models alone still load


def test_ema_only_file(tmp_path):
    _, _, g_running = seed_models()
    path = tmp_path / "010000.model"
    torch.save(g_running.state_dict(), path)
    loaded = load_rosinality(path, impl="reference")
    assert loaded["generator"] is None and loaded["discriminator"] is None
    with torch.no_grad():
        assert_generators_agree(loaded["g_running"], g_running, steps=(3,))


def test_a_file_of_pytorch_before_1_6_loads(tmp_path):
    """The seed's files may predate PyTorch 1.6's ZIP format: torch.save's legacy format (a pickle) reads too."""
    _, _, g_running = seed_models()
    torch.save(g_running.state_dict(), tmp_path / "010000.model", _use_new_zipfile_serialization=False)
    loaded = load_rosinality(tmp_path / "010000.model", impl="reference")["g_running"].state_dict()
    expected = checkpoint.convert_generator(g_running.state_dict(), impl="reference").state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_data_parallel_prefixes_are_stripped(tmp_path):
    """State dicts saved from ``nn.DataParallel`` models ("module." before every key) read as the plain ones."""
    generator, discriminator, g_running = seed_models()
    prefixed = lambda model: {f"module.{k}": v for k, v in model.state_dict().items()}  # noqa: E731
    torch.save(prefixed(g_running), tmp_path / "010000.model")
    torch.save({"generator": prefixed(generator), "discriminator": prefixed(discriminator),
                "g_running": g_running.state_dict()}, tmp_path / "train_step-3.model")
    ema_only = load_rosinality(tmp_path / "010000.model", impl="reference")
    loaded = load_rosinality(tmp_path / "train_step-3.model", impl="reference")
    for ours, expected in (
        (ema_only["g_running"], checkpoint.convert_generator(g_running.state_dict(), impl="reference")),
        (loaded["generator"], checkpoint.convert_generator(generator.state_dict(), impl="reference")),
        (loaded["discriminator"], checkpoint.convert_discriminator(discriminator.state_dict(), impl="reference")),
    ):
        assert ours.state_dict().keys() == expected.state_dict().keys()
        assert all(torch.equal(ours.state_dict()[k], v) for k, v in expected.state_dict().items())


def test_seed_full_width_layout():
    """The seed's published models: 139 generator keys, 72 discriminator keys, the defaults inferred."""
    generator, discriminator = seed.StyledGenerator(), seed.Discriminator()
    g_state, d_state = generator.state_dict(), discriminator.state_dict()
    assert len(g_state) == 139 and len(d_state) == 72
    assert g_state["generator.progression.5.conv1.0.weight"].shape == (256, 128, 3, 3)
    assert g_state["generator.progression.1.conv1.2.weight_flip"].shape == (512, 1, 3, 3)
    assert d_state["progression.8.conv1.0.conv.weight_orig"].shape == (512, 513, 3, 3)
    assert d_state["progression.3.conv2.1.weight"].shape == (256, 256, 3, 3)
    ours_g = checkpoint.convert_generator(g_state, impl="reference")
    ours_d = checkpoint.convert_discriminator(d_state, impl="reference")
    assert ours_g.config == StyledGenerator(impl="reference").config
    assert ours_d.config == Discriminator(impl="reference").config
    with torch.no_grad():
        assert_generators_agree(ours_g, generator, steps=(1,))
        assert_discriminators_agree(ours_d, discriminator, steps=(1,))


def test_convert_command_and_own_format(tmp_path):
    generator, discriminator, g_running = seed_models()
    source, target = tmp_path / "train_step-2.model", tmp_path / "converted.pt"
    write_train_step(source, generator, discriminator, g_running)
    subprocess.run([sys.executable, "-m", "stylegan_cuda.convert", str(source), str(target)], check=True,
                   capture_output=True)
    loaded = checkpoint.load(target, impl="reference")
    with torch.no_grad():
        assert_generators_agree(loaded["generator"], generator, steps=(2,))
        assert_generators_agree(loaded["g_running"], g_running, steps=(2,))
        assert_discriminators_agree(loaded["discriminator"], discriminator, steps=(2,))
    # Bad input: clear errors, exit status 2, nothing written.
    (tmp_path / "a_folder").mkdir()
    for output in (tmp_path / "a_folder", tmp_path / "missing" / "x.pt"):
        assert convert_main([str(source), str(output)]) == 2
    assert convert_main([str(target), str(tmp_path / "again.pt")]) == 2  # ours, not the seed's
    # An existing output is replaced only with --overwrite; the input never.
    before = source.read_bytes()
    for argv in ([source, source], [source, source, "--overwrite"], [source, target]):
        assert convert_main([str(arg) for arg in argv]) == 2
    assert source.read_bytes() == before and checkpoint.load(target, impl="reference")["generator"] is not None
    checkpoint.save(target, discriminator=loaded["discriminator"])
    assert convert_main([str(source), str(target), "--overwrite"]) == 0
    assert checkpoint.load(target, impl="reference")["generator"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "converted.pt", "train_step-2.model"]
    assert not any((tmp_path / "a_folder").iterdir())
    # A model of this project round-trips through save / load.
    path = tmp_path / "own.pt"
    checkpoint.save(path, discriminator=loaded["discriminator"])
    again = checkpoint.load(path, impl="reference")
    assert again["generator"] is None and again["g_running"] is None
    for key, value in loaded["discriminator"].state_dict().items():
        torch.testing.assert_close(again["discriminator"].state_dict()[key], value)


def test_convert_refuses_a_dangling_link_and_reports_a_failed_write(tmp_path, monkeypatch, capsys):
    source, output = tmp_path / "train_step-2.model", tmp_path / "converted.pt"
    write_train_step(source, *seed_models())
    output.symlink_to(tmp_path / "elsewhere.pt")  # an existing output, though it points nowhere
    assert convert_main([str(source), str(output)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and output.is_symlink()

    def failed_write(obj, handle, *args, **kwargs):  # how torch.save reports a failed write
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    monkeypatch.setattr(torch, "save", failed_write)
    assert convert_main([str(source), str(output), "--overwrite"]) == 2
    assert f"cannot write {output}: [enforce fail" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted.pt", "train_step-2.model"] and output.is_symlink()


class _NotATensor:
    pass


def _edited_generator_state(edit):
    state = seed_models()[0].state_dict()
    edit(state)
    return state


BAD_GENERATOR_STATES = {
    "missing": (lambda s: s.pop("generator.progression.2.noise1.weight_orig"),
                "missing key 'generator.progression.2.noise1.weight_orig'"),
    "misshapen": (lambda s: s.__setitem__("generator.progression.3.conv2.conv.weight_orig", torch.zeros(8, 8, 1, 1)),
                  "key 'generator.progression.3.conv2.conv.weight_orig' has shape"),
    "unexpected": (lambda s: s.__setitem__("generator.extra", torch.zeros(1)), "unexpected key 'generator.extra'"),
    "blur": (lambda s: s.__setitem__("generator.progression.1.conv1.2.weight", torch.ones(8, 1, 3, 3)),
             "generator.progression.1.conv1.2.weight"),
    "integer": (lambda s: s.__setitem__("style.1.linear.bias", torch.zeros(CODE_DIM, dtype=torch.long)),
                "style.1.linear.bias"),
    "number": (lambda s: s.__setitem__("style.1.linear.bias", 0.5), "key 'style.1.linear.bias' holds a float, not a "
               "tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_GENERATOR_STATES))
def test_bad_state_names_the_first_bad_key(tmp_path, case):
    edit, message = BAD_GENERATOR_STATES[case]
    path = tmp_path / "bad.model"
    torch.save({"generator": _edited_generator_state(edit)}, path)
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace(".", r"\.")) as raised:
        load_rosinality(path, impl="reference")
    assert str(raised.value).startswith(f"{path}: generator: ")


def test_files_that_are_not_checkpoints(tmp_path):
    cases = {
        "tensor.pt": lambda p: torch.save(torch.zeros(3), p),
        "other_dict.pt": lambda p: torch.save({"weights": torch.zeros(3)}, p),
        "text.pt": lambda p: p.write_text("not a checkpoint"),
        "pickled_object.pt": lambda p: torch.save({"generator": _NotATensor()}, p),
        "listed_state.pt": lambda p: torch.save({"generator": [torch.zeros(3)]}, p),
    }
    for name, write in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(CheckpointError):
            load_rosinality(path, impl="reference")
        with pytest.raises(CheckpointError):
            checkpoint.load(path, impl="reference")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_rosinality(tmp_path / "missing.model")


def test_unreadable_files_say_why_without_unsafe_advice(tmp_path):
    """torch.load's own message suggests ``weights_only=False``, which would run the file's code: not passed on."""
    (tmp_path / "text.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"generator": _NotATensor()}, tmp_path / "object.pt")
    reasons = {"text.pt": "is not a PyTorch checkpoint: torch.save writes a ZIP archive (or, before PyTorch 1.6, a "
                          "pickle), and this file begins with b'not a checkpoint'",
               "empty.pt": "empty or cut short", "object.pt": "_NotATensor"}
    for name, reason in reasons.items():
        with pytest.raises(CheckpointError) as raised:
            checkpoint.read(tmp_path / name)
        message = str(raised.value)
        assert str(tmp_path / name) in message and reason in message
        assert "weights_only" not in message


def test_save_takes_the_three_model_names_only(tmp_path):
    with pytest.raises(ValueError, match="models are named generator, discriminator, g_running, got ema"):
        checkpoint.save(tmp_path / "own.pt", ema=Discriminator(impl="reference", **TINY))
    assert not (tmp_path / "own.pt").exists()


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "own.pt"
    checkpoint.save(path, discriminator=Discriminator(impl="reference", **TINY))
    before = path.read_bytes()

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, generator=StyledGenerator(impl="reference", **SEED_TINY))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["own.pt"]


@pytest.mark.parametrize("key, message", [("linear.weight", "'linear.weight' has shape"),
                                          ("linear.extra", "unexpected key 'linear.extra'")])
def test_own_file_with_wrong_shapes_or_keys(tmp_path, key, message):
    path = tmp_path / "own.pt"
    model = Discriminator(impl="reference", **TINY)
    checkpoint.save(path, discriminator=model)
    data = torch.load(path, weights_only=True)
    data["models"]["discriminator"]["state_dict"][key] = torch.zeros(1, 3)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path, impl="reference")


def _train_checkpoint_data(path):
    """The data of a train.py checkpoint of tiny models (written to ``path`` first)."""
    generator = StyledGenerator(impl="reference", **SEED_TINY)
    discriminator = Discriminator(impl="reference", **TINY)
    checkpoint.save(path, generator=generator, g_running=generator, discriminator=discriminator)
    data = torch.load(path, weights_only=True)
    data["training"] = {"kind": TRAINING_KIND, "version": TRAINING_VERSION, "iteration": 3, "data_position": 12,
                        "progress": {"step": 1, "used_sample": 12, "final": False, "fade_init": False},
                        "alpha": 0.5, "last_alpha": 0.5, "args": {}, "g_optimizer": {}, "d_optimizer": {}, "rng": []}
    return data


DELETE = object()
# (the keys leading to an entry, its new value or DELETE, the error's message)
BAD_STRUCTURES = {
    "models_int": (("models",), 5, "'models' is of type int, not a dict of model entries"),
    "version_2": (("version",), 2, "has version 2; this code reads version 1"),
    "no_config": (("models", "generator", "config"), DELETE, "generator: 'config' is missing or not a dict"),
    "state_dict_list": (("models", "g_running", "state_dict"), [1], "g_running: 'state_dict' is missing"),
    "config_no_model": (("models", "generator", "config", "code_dim"), 0, "generator: its config does not make a "
                        "model"),
    "training_int": (("training",), 7, "'training' is of type int, not train.py's training state"),
    "no_progress": (("training", "progress"), DELETE, "the training state has no progress"),
    "no_step": (("training", "progress", "step"), DELETE, "the training state has no progress.step"),
    "step_too_large": (("training", "progress", "step"), 42, "progress.step is 42: steps are 0 to 8"),
    "step_negative": (("training", "progress", "step"), -1, "progress.step is -1: steps are 0 to 8"),
    "step_text": (("training", "progress", "step"), "1", "progress.step is of type str, expected int"),
    "iteration_negative": (("training", "iteration"), -1, "iteration is -1, not a count"),
    "iteration_bool": (("training", "iteration"), True, "iteration is of type bool, expected int"),
    "alpha_large": (("training", "alpha"), 2.0, "alpha is 2.0, not a fade-in weight from 0 to 1"),
    "rng_int": (("training", "rng"), 5, "rng is of type int, expected list"),
    "world_size_zero": (("training", "world_size"), 0, "world_size is 0, not a number of processes"),
    "args_list": (("training", "args"), [], "args is of type list, expected dict"),
}


@pytest.mark.parametrize("step", [0, 1, MAX_STEP])
def test_a_train_checkpoint_of_the_right_structure(tmp_path, step):
    """Every step from 4 px to 1024 px is a training state's progress.step; so is a state just after the resolution
    grew (no samples used, alpha 0) of a run of one process."""
    path = tmp_path / "good.pt"
    data = _train_checkpoint_data(path)
    data["training"]["progress"].update(step=step, used_sample=0)
    data["training"].update(alpha=0.0, world_size=1)
    torch.save(data, path)
    assert read_resume(path, impl="reference").training["progress"]["step"] == step
    assert checkpoint.load(path, impl="reference")["generator"] is not None


def test_a_model_of_another_name_is_refused(tmp_path):
    path = tmp_path / "renamed.pt"
    data = _train_checkpoint_data(path)
    data["models"]["ema"] = data["models"].pop("g_running")
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="'ema' is not a model entry of this project"):
        checkpoint.load(path, impl="reference")


@pytest.mark.parametrize("entry, value, message", [
    ("version", TRAINING_VERSION + 1, f"training state version {TRAINING_VERSION + 1}; this train.py reads version"),
    ("kind", "another.trainer", "its training state is not one written by train.py"),
])
def test_resume_refuses_a_training_state_of_another_kind_or_version(tmp_path, entry, value, message):
    path = tmp_path / "other.pt"
    data = _train_checkpoint_data(path)
    data["training"][entry] = value
    torch.save(data, path)
    with pytest.raises(TrainError, match=re.escape(message)):
        read_resume(path, impl="reference")


@pytest.mark.parametrize("case", sorted(BAD_STRUCTURES))
def test_wrong_structure_names_the_file_and_the_entry(tmp_path, case):
    """Valid pickles of the wrong structure: a CheckpointError for every reader, never a KeyError or IndexError."""
    (*parents, last), value, message = BAD_STRUCTURES[case]
    path = tmp_path / f"{case}.pt"
    data = _train_checkpoint_data(path)
    entry = data
    for key in parents:
        entry = entry[key]
    if value is DELETE:
        del entry[last]
    else:
        entry[last] = value
    torch.save(data, path)
    for read in (lambda: checkpoint.load(path, impl="reference"), lambda: read_resume(path, impl="reference")):
        with pytest.raises(CheckpointError) as raised:
            read()
        assert str(raised.value).startswith(str(path)) and message in str(raised.value)


def test_a_bad_impl_is_named_before_the_file_is_read(tmp_path):
    for load in (checkpoint.load, checkpoint.load_rosinality):
        with pytest.raises(ValueError, match="impl must be one of auto, extension, reference"):
            load(tmp_path / "missing.pt", impl="fast")


def test_a_folder_gives_its_latest_checkpoint(tmp_path):
    """A train.py --out folder or its checkpoint/ folder: the NNNNNN.pt of the largest iteration, past 999999 too."""
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    for name in ("000500.pt", "999999.pt", "1000000.pt", "notes.pt"):
        (folder / name).write_bytes(b"")
    for path in (tmp_path, folder):
        assert checkpoint.find(path) == folder / "1000000.pt"
