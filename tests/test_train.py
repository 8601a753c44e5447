"""train.py: progressive growing, both losses, exact resume, atomic checkpoints, torchrun with gloo, bad input.

Tiny networks (16 channels, 16-dim codes) on a tiny LMDB of the demo images at 8 and 16 px, on the CPU.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn

import seed_reference
from stylegan_cuda import checkpoint as ckpt
from stylegan_cuda.data import prepare_database
from stylegan_cuda.data.demo import write_demo_images
from stylegan_cuda.models import StyledGenerator, weights_finite
from stylegan_cuda.stop_signals import handling_stop_signals
from stylegan_cuda.train import trainer as trainer_module
from stylegan_cuda.train.schedule import SCHED_BATCH, SCHED_LR, Progress, Schedule
from stylegan_cuda.train.batches import FlippableImages, ResumableBatches, open_dataset
from stylegan_cuda.train.cli import main, make_config
from stylegan_cuda.train.config import TrainError
from stylegan_cuda.train.distributed import DistInfo, all_reduce_gradients, mean_over_ranks
from stylegan_cuda.train.step import (StepConfig, accumulate, input_gradient, r1_penalty, sample_latents,
                                      train_step)
from stylegan_cuda.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = ["--channel_base", "1024", "--max_channels", "16", "--code_dim", "16", "--n_mlp", "2"]


@pytest.fixture(scope="module")
def lmdb_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    images = root / "images"
    images.mkdir()
    write_demo_images(images)
    for path in sorted(images.iterdir())[6:]:
        path.unlink()  # 6 images are enough
    db = root / "db"
    prepare_database(images, db, sizes=(8, 16), n_worker=1, stream=open(os.devnull, "w"))
    return db


def args_for(db, out, *extra, iterations=8, loss="r1"):
    return [str(db), "--out", str(out), "--iterations", str(iterations), "--phase", "8", "--batch", "4",
            "--init_size", "8", "--max_size", "16", "--loss", loss, "--mixing", "--log_every", "2",
            "--sample_every", "4", "--save_every", "4", "--device", "cpu", *TINY, *extra]


def run_trainer(argv) -> tuple[Trainer, dict]:
    config, resume = make_config(argv)
    trainer = Trainer(config, resume, log=lambda *a, **k: None)
    losses = {}
    trainer.on_iteration = lambda it, values: losses.__setitem__(it, values)
    trainer.run()
    return trainer, losses


# ------------------------------------------------------------------------------------------------- schedule


def test_schedule_follows_the_seed():
    schedule = Schedule(phase=10, init_size=8, max_size=16, batch=4)
    progress = Progress.start(schedule)
    seen = []
    for _ in range(14):
        alpha, stepped = progress.begin_iteration(schedule)
        seen.append((progress.resolution, round(alpha, 3), stepped))
        progress.end_iteration(4)
    # 8 px is not faded in; step up at the first iteration finding used_sample > 2 * phase, at alpha 0.
    assert seen[:6] == [(8, 1.0, False)] * 6
    assert seen[6] == (16, 0.0, True)
    assert seen[7] == (16, 0.5, False)  # (4 + 1) / 10
    assert seen[8][1] == 0.9 and seen[9][1] == 1.0
    # Past max_size: final, alpha 1, no new resolution.
    assert seen[12] == (16, 1.0, False) and progress.final


def test_progress_state_round_trips_with_the_fade_in_of_a_run_started_from_weights():
    """A run started from trained weights fades its first resolution in; resumed mid-fade, it goes on fading."""
    schedule = Schedule(phase=10, init_size=8, max_size=16)
    progress = Progress(step=schedule.init_step, used_sample=4, fade_init=True)
    resumed = Progress.from_state_dict(progress.state_dict())
    assert resumed == progress and resumed.alpha(schedule) == 0.5


def test_lr_flag_is_not_overwritten():
    assert Schedule(lr=0.005).lr_at(8) == 0.005 and Schedule(lr=0.005).lr_at(256) == 0.005
    sched = Schedule(lr=0.005, sched=True, batch=7)
    assert sched.lr_at(256) == SCHED_LR[256] and sched.lr_at(8) == 0.005
    assert sched.batch_at(16) == SCHED_BATCH[16] and sched.batch_at(512) == 7
    with pytest.raises(ValueError, match="init_size 32 is larger"):
        Schedule(init_size=32, max_size=16)
    with pytest.raises(ValueError, match="resolution must be one of"):
        Schedule(init_size=12)


def test_sched_tables_are_the_seeds():
    """``--sched``: the seed's train.py tables by resolution; ``--lr`` / ``--batch`` where they have no entry."""
    sched = Schedule(lr=0.0005, sched=True, batch=7)
    resolutions = [4 * 2**step for step in range(9)]
    assert [sched.lr_at(r) for r in resolutions] == [0.0005] * 5 + [0.0015, 0.002, 0.003, 0.003]
    assert [sched.batch_at(r) for r in resolutions] == [512, 256, 128, 64, 32, 32, 32, 7, 7]


def test_batches_cover_epochs_and_resume_mid_stream():
    stream = ResumableBatches(length=5, batch=3, seed=1, resolution=8)
    it = iter(stream)
    batches = [next(it) for _ in range(4)]
    flat = [k for b in batches for k in b]
    assert sorted(k // 2 for k in flat[:5]) == list(range(5))  # an epoch is a permutation
    resumed = iter(ResumableBatches(length=5, batch=3, seed=1, resolution=8, position=6))
    assert [next(resumed) for _ in range(2)] == batches[2:]
    ranks = [ResumableBatches(5, 3, 1, 8, rank=r, world_size=2).epoch_keys(0) for r in range(2)]
    assert set(k // 2 for k in torch.cat(ranks).tolist()) == set(range(5))  # 5 images padded to 2 x 3
    assert len(ranks[0]) == len(ranks[1]) == 3
    # As DistributedSampler: the epoch's order padded by its first keys, every world_size-th key from the rank-th.
    padded = torch.cat([stream.epoch_keys(0), stream.epoch_keys(0)[:1]])
    assert all(torch.equal(ranks[r], padded[r::2]) for r in range(2))
    # Another number of ranks goes on in the same epoch: 4 = epoch 1 (of 3 keys per rank) + 1 key by each of 2 ranks
    # is epoch 1 (of 5 keys) + 2 keys for one rank, and back.
    assert ResumableBatches.rank_position(5, 4, world_size=2, new_world_size=1) == 5 + 2
    assert ResumableBatches.rank_position(5, 7, world_size=1, new_world_size=2) == 3 + 1


def test_batches_of_any_accepted_seed():
    """Seeds up to 2**32 - 1 (--seed's range) give an order; small ones the same order as before, so that the
    checkpoints of earlier runs resume with their data order."""
    old_order = torch.randperm(6, generator=torch.Generator().manual_seed((7 * 1_000_003 + 16) * 65_537 + 3))
    assert torch.equal(ResumableBatches(6, 4, seed=7, resolution=16).epoch_keys(3) // 2, old_order)
    keys = ResumableBatches(6, 4, seed=2**32 - 1, resolution=1024).epoch_keys(10**6)
    assert sorted((keys // 2).tolist()) == list(range(6))


def test_training_images_are_the_seeds_values_flipped_left_right(tmp_path):
    """Odd keys are the image mirrored left-right (the seed's RandomHorizontalFlip), values (x / 255 - 0.5) / 0.5."""
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pixels[0, 0], pixels[0, 1] = (0, 0, 0), (255, 255, 255)
    Image.fromarray(pixels).save(images / "noise.png")
    prepare_database(images, tmp_path / "db", sizes=(8,), image_format="png", stream=io.StringIO())
    dataset = FlippableImages(open_dataset(tmp_path / "db", Schedule(init_size=8, max_size=8)))
    expected = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(dataset[0], expected)
    torch.testing.assert_close(dataset[1], expected.flip(-1))
    assert dataset[0].min() == -1 and dataset[0].max() == 1


# ---------------------------------------------------------------------------------------------- one iteration


class LinearCritic(nn.Module):
    """A stand-in discriminator, ``D(x) = <w, x> + b``: its input gradient is ``w`` at every image, so each
    penalty has a closed form. Keeps the images it scores in ``inputs``."""

    def __init__(self, size):
        super().__init__()
        self.w = nn.Parameter(0.1 * torch.randn(3, size, size, generator=torch.Generator().manual_seed(1)))
        self.b = nn.Parameter(torch.tensor([0.3]))
        self.inputs = []

    def forward(self, x, step, alpha):
        self.inputs.append(x.detach().clone())
        return (x * self.w).flatten(1).sum(1, keepdim=True) + self.b


class FixedImageGenerator(nn.Module):
    """A stand-in generator that draws one learned image whatever its latents: its fakes are known."""

    def __init__(self, size):
        super().__init__()
        self.config = {"code_dim": 4}
        self.image = nn.Parameter(torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2)))

    def forward(self, latents, step, alpha):
        return self.image.expand(latents[0].shape[0], -1, -1, -1)


@pytest.mark.parametrize("loss", ["r1", "wgan-gp"])
def test_one_iteration_computes_the_seeds_losses_and_ema(loss):
    """The seed's train.py losses, with its default weights (R1 gamma 10, WGAN-GP 10, drift 0.001), and the EMA
    with decay 0.999 of the updated generator."""
    size, batch = 8, 3
    generator, critic = FixedImageGenerator(size), LinearCritic(size)
    g_running = copy.deepcopy(generator)
    g_before, d_before = copy.deepcopy(generator), copy.deepcopy(critic)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    d_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.0, 0.99))
    fake = g_before.image.detach().expand(batch, -1, -1, -1)
    real = fake + 1 + torch.rand(batch, 3, size, size)
    losses = train_step(generator, critic, g_optimizer, d_optimizer, real, step=1, alpha=1.0,
                        config=StepConfig(loss=loss, mixing=False), g_running=g_running)
    with torch.no_grad():
        real_scores, fake_scores = d_before(real, 1, 1.0), d_before(fake, 1, 1.0)
        scores_for_g = critic(fake, 1, 1.0)  # D after its step
        grad_norm = d_before.w.norm()  # ||grad_x D(x)|| of every image
        if loss == "r1":
            penalty = 10 / 2 * grad_norm**2
            d_loss = F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean() + penalty
            g_loss = F.softplus(-scores_for_g).mean()
        else:
            penalty = 10 * (grad_norm - 1) ** 2
            d_loss = -real_scores.mean() + 0.001 * real_scores.square().mean() + fake_scores.mean() + penalty
            g_loss = -scores_for_g.mean()
    for name, expected in (("real", real_scores.mean()), ("fake", fake_scores.mean()), ("penalty", penalty),
                           ("d", d_loss), ("g", g_loss)):
        torch.testing.assert_close(losses[name], expected, msg=lambda m, name=name: f"{name}: {m}")
    assert not torch.equal(generator.image, g_before.image)
    torch.testing.assert_close(g_running.image, 0.999 * g_before.image + 0.001 * generator.image)
    if loss == "wgan-gp":  # the penalty's images lie between a real and a fake one, one epsilon per sample
        (between,) = [x for x in critic.inputs if not torch.equal(x, real) and not torch.equal(x, fake)]
        eps = (between - fake) / (real - fake)
        torch.testing.assert_close(eps, eps[:, :1, :1, :1].expand_as(eps))
        assert ((0 <= eps) & (eps <= 1)).all() and eps[:, 0, 0, 0].unique().numel() == batch


def test_ema_is_the_seeds_accumulate_exactly():
    """Every parameter of the EMA model becomes the seed's ``mul_(decay).add_(param, alpha=1 - decay)``, bit for bit."""
    model, ema = (StyledGenerator(code_dim=16, n_mlp=2, channel_base=1024, max_channels=16) for _ in range(2))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_()
    expected = {name: p.detach().clone().mul_(0.9).add_(model.get_parameter(name).detach(), alpha=1 - 0.9)
                for name, p in ema.named_parameters()}
    accumulate(ema, model, decay=0.9)
    assert all(torch.equal(p, expected[name]) for name, p in ema.named_parameters())


def test_style_mixing_draws_two_latents_nine_times_in_ten_for_both_steps():
    """The seed's ``--mixing``: with probability 0.9 the D step and the G step of an iteration both take a pair of
    latents (a random crossover), else both one."""
    random.seed(0)
    draws = [sample_latents(2, 4, "cpu", mixing=True) for _ in range(2000)]
    counts = [len(d_latents) for d_latents, _ in draws]
    assert all(len(g_latents) == count for (_, g_latents), count in zip(draws, counts))
    assert set(counts) == {1, 2} and abs(counts.count(2) / len(counts) - 0.9) < 0.03
    d_latents, g_latents = draws[counts.index(2)]
    assert len({id(z) for z in d_latents + g_latents}) == 4 and not torch.equal(d_latents[0], g_latents[0])
    assert all(len(d) == len(g) == 1 for d, g in (sample_latents(2, 4, "cpu", mixing=False) for _ in range(20)))


def test_penalties_through_the_fp16_loss_scale_are_unscaled():
    """With ``--amp fp16`` the penalties differentiate a scaled loss: the input gradient comes back unscaled."""
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    scores = (x * torch.randn(3, 4, 4)).flatten(1).sum(1, keepdim=True) ** 2
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    torch.testing.assert_close(input_gradient(scores, x, scaler), input_gradient(scores, x))
    torch.testing.assert_close(r1_penalty(scores, x, scaler=scaler), r1_penalty(scores, x))


# -------------------------------------------------------------------------------------------------- training


def test_r1_run_steps_up_and_writes_everything(lmdb_path, tmp_path):
    out = tmp_path / "out" / "nested"  # created by train.py
    trainer, losses = run_trainer(args_for(lmdb_path, out, "--lr", "0.002"))
    assert trainer.progress.resolution == 16 and trainer.iteration == 8
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in losses.values())
    assert [losses[i]["alpha"] for i in (5, 6, 7)] == [1.0, 0.0, 0.625]  # 8 px done after 5 x 4 > 16 images
    assert trainer.g_optimizer.param_groups[0]["lr"] == 0.002  # --lr applies (the seed's bug)
    assert trainer.g_optimizer.param_groups[1]["lr"] == pytest.approx(0.002 * 0.01)
    names = sorted(p.name for p in (out / "checkpoint").iterdir())
    assert names == ["000004.pt", "000005.pt", "000008.pt"]  # every 4, and the end of 8 px
    assert sorted(p.name for p in (out / "sample").iterdir()) == ["000004.png", "000008.png"]
    from PIL import Image
    assert Image.open(out / "sample" / "000004.png").size == (10 * 10 + 2, 5 * 10 + 2)  # 8 px, 10 x 5
    assert Image.open(out / "sample" / "000008.png").size == (10 * 18 + 2, 5 * 18 + 2)
    data = torch.load(out / "checkpoint" / "000005.pt", weights_only=True)
    assert data["training"]["progress"] == {"step": 1, "used_sample": 20, "final": False, "fade_init": False}
    models = ckpt.load(out / "checkpoint" / "000008.pt")  # the model engineer's loader reads it
    assert models["g_running"].config["code_dim"] == 16
    assert not list(out.rglob("*.tmp*"))


def test_wgan_gp_run(lmdb_path, tmp_path):
    trainer, losses = run_trainer(args_for(lmdb_path, tmp_path, iterations=3, loss="wgan-gp"))
    assert trainer.iteration == 3
    assert all(v["penalty"] >= 0 and torch.isfinite(torch.tensor(v["d"])) for v in losses.values())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_on_cpu(lmdb_path, tmp_path, amp):
    trainer, losses = run_trainer(args_for(lmdb_path, tmp_path, "--amp", amp, iterations=4))
    finite = [bool(torch.isfinite(torch.tensor(list(v.values()))).all()) for v in losses.values()]
    if amp == "fp16":  # the loss scale starts at 2**16: the first R1 penalty overflows, its step is skipped
        assert trainer.d_scaler.get_scale() < 2**16 and finite[-2:] == [True, True], losses
    else:
        assert all(finite), losses
    assert all(weights_finite(model) for model in (trainer.generator, trainer.discriminator, trainer.g_running))


def test_channels_last_trains_the_same(lmdb_path, tmp_path):
    _, plain = run_trainer(args_for(lmdb_path, tmp_path / "plain", iterations=2))
    trainer, nhwc = run_trainer(args_for(lmdb_path, tmp_path / "nhwc", "--channels_last", iterations=2))
    weight = trainer.generator.synthesis.blocks[1].conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    for it in plain:
        for name in plain[it]:
            assert nhwc[it][name] == pytest.approx(plain[it][name], rel=1e-4, abs=1e-5), (it, name)
    saved = torch.load(tmp_path / "nhwc" / "checkpoint" / "000002.pt", weights_only=True)
    assert all(v.is_contiguous() for v in saved["models"]["generator"]["state_dict"].values())


def test_resume_continues_exactly(lmdb_path, tmp_path):
    full, full_losses = run_trainer(args_for(lmdb_path, tmp_path / "a"))
    # Resume from iteration 4 (8 px): the next iterations step up to 16 px at the same point, same losses.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for name in ("000005.pt", "000008.pt"):
        (tmp_path / "b" / "checkpoint" / name).unlink()
    config, resume = make_config(["--resume", str(tmp_path / "b"), "--out", str(tmp_path / "b")])
    assert resume.path.name == "000004.pt"  # the latest in the folder
    assert config.loss == "r1" and config.phase == 8 and config.code_dim == 16  # options from the checkpoint
    resumed = Trainer(config, resume, log=lambda *a, **k: None)
    assert (resumed.iteration, resumed.progress.step, resumed.progress.used_sample) == (4, 1, 16)
    losses = {}
    resumed.on_iteration = lambda it, values: losses.__setitem__(it, values)
    resumed.run()
    assert sorted(losses) == [5, 6, 7, 8]
    for it in losses:
        assert losses[it] == full_losses[it], it
    assert resumed.progress == full.progress
    for name in ("generator", "discriminator", "g_running"):
        a, b = getattr(full, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_optimizers_stay_fused_when_resumed_from_an_unfused_state(lmdb_path, tmp_path):
    """Adam runs torch's fused kernels; a state saved by an unfused optimizer (earlier versions) does not switch them
    off on resume (load_state_dict takes a saved group's settings; unfused, Adam refused GradScaler's fp16 step)."""
    full, _ = run_trainer(args_for(lmdb_path, tmp_path, "--amp", "fp16", iterations=4))
    assert all(group["fused"] for opt in (full.g_optimizer, full.d_optimizer) for group in opt.param_groups)
    path = tmp_path / "checkpoint" / "000004.pt"
    data = torch.load(path, weights_only=True)
    for name in ("g_optimizer", "d_optimizer"):
        for group in data["training"][name]["param_groups"]:
            group["fused"] = None
    torch.save(data, path)
    config, resume = make_config(["--resume", str(path), "--out", str(tmp_path), "--iterations", "5"])
    resumed = Trainer(config, resume, log=lambda *a, **k: None)
    assert all(group["fused"] and group["foreach"] is None
               for opt in (resumed.g_optimizer, resumed.d_optimizer) for group in opt.param_groups)
    resumed.run()
    assert resumed.iteration == 5


def test_a_stop_signal_ends_the_run_with_a_checkpoint_that_resumes_exactly(lmdb_path, tmp_path, capsys):
    _, full_losses = run_trainer(args_for(lmdb_path, tmp_path / "full"))
    config, _ = make_config(args_for(lmdb_path, tmp_path / "stopped"))
    stopped = Trainer(config, log=print)
    stopped.on_iteration = lambda it, values: it == 3 and os.kill(os.getpid(), signal.SIGINT)
    handler = signal.getsignal(signal.SIGINT)
    stopped.run()  # the signal arrives in iteration 3: the run ends after it, with its checkpoint
    assert stopped.stopped_by == signal.SIGINT and stopped.iteration == 3
    assert "stopped by SIGINT" in capsys.readouterr().out
    assert (tmp_path / "stopped" / "checkpoint" / "000003.pt").exists()
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    _, resumed_losses = run_trainer(["--resume", str(tmp_path / "stopped")])
    assert sorted(resumed_losses) == [4, 5, 6, 7, 8]
    assert all(resumed_losses[it] == full_losses[it] for it in resumed_losses)


def test_stop_signals_are_left_alone_outside_the_main_thread():
    """Python delivers signals to the main thread only: in another thread (a trainer run from one) nothing changes
    and nothing fails."""
    before = signal.getsignal(signal.SIGINT)

    def handler_inside():
        with handling_stop_signals(lambda signum, frame: None):
            return signal.getsignal(signal.SIGINT)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(handler_inside).result() is before


def test_a_second_stop_signal_interrupts_at_once(lmdb_path, tmp_path):
    config, _ = make_config(args_for(lmdb_path, tmp_path))
    trainer = Trainer(config, log=lambda *a, **k: None)
    trainer.on_iteration = lambda it, values: it == 2 and [os.kill(os.getpid(), signal.SIGTERM) for _ in range(2)]
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_second_stop_signal_during_a_checkpoint_save_exits_130(lmdb_path, tmp_path, monkeypatch, capsys):
    """Ctrl-C Ctrl-C while torch.save writes: torch's file writer turns the interrupt into a RuntimeError; the run
    still stops as interrupted, leaving no temporary file."""
    def interrupted_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        try:
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from interrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    assert main(args_for(lmdb_path, tmp_path, iterations=1)) == 130
    assert "interrupted at once" in capsys.readouterr().err
    assert list((tmp_path / "checkpoint").iterdir()) == []


def test_sigterm_to_the_command_saves_and_exits_143(lmdb_path, tmp_path):
    """A scheduler's preemption: the command (with data loader workers, which leave the signal to it) writes a
    checkpoint at the iteration it stops at and exits with 128 + SIGTERM."""
    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "train.py"), *args_for(lmdb_path, out, "--num_workers", "2",
                                                                 iterations=100000), "--save_every", "100000"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:  # wait until it trains
        lines.append(line)
        if line.startswith("[000004]"):
            process.send_signal(signal.SIGTERM)
            break
    output = "".join(lines) + process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    stopped_at = int(re.search(r"\[(\d+)\] stopped by SIGTERM", output).group(1))
    assert stopped_at >= 4 and (out / "checkpoint" / f"{stopped_at:06d}.pt").exists()
    assert not [p for p in (out / "checkpoint").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("model, name", [("discriminator", "discriminator"),
                                         ("g_running", r"EMA generator \(g_running\)")])
def test_divergence_stops_the_run_before_a_checkpoint_holds_it(lmdb_path, tmp_path, model, name):
    def diverge(it, values):
        if it == 5:
            with torch.no_grad():
                next(getattr(trainer, model).parameters()).view(-1)[0] = float("nan")

    config, _ = make_config(args_for(lmdb_path, tmp_path))
    trainer = Trainer(config, log=lambda *a, **k: None)
    trainer.on_iteration = diverge
    with pytest.raises(TrainError, match=rf"diverged by iteration 5: the {name} has NaN or infinite weights; "
                                         r"the last checkpoint written is .*000004.pt"):
        trainer.run()
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["000004.pt"]


def test_checkpoint_write_is_atomic(lmdb_path, tmp_path, monkeypatch):
    trainer, _ = run_trainer(args_for(lmdb_path, tmp_path, iterations=1))
    path = tmp_path / "checkpoint" / "000001.pt"
    before = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(TrainError, match=r"cannot write the checkpoint .*000001.pt: disk full"):
        trainer.save_checkpoint()
    def broken_grid(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trainer_module, "save_grid", broken_grid)
    with pytest.raises(TrainError, match=r"cannot write the sample grid .*000001.png: disk full"):
        trainer.write_sample(1.0)
    assert path.read_bytes() == before  # the old file is intact, no temporary file is left
    assert sorted(p.name for p in path.parent.iterdir()) == ["000001.pt"]


def test_resume_from_a_seed_checkpoint_starts_from_its_weights(lmdb_path, tmp_path):
    torch.manual_seed(0)
    widths = dict(channel_base=1024, max_channels=16)
    generator = seed_reference.StyledGenerator(code_dim=16, n_mlp=2, **widths)
    discriminator = seed_reference.Discriminator(**widths)
    g_optimizer, d_optimizer = seed_reference.optimizers(generator, discriminator)
    discriminator(generator(torch.randn(2, 16), step=1), step=1).mean().backward()
    g_optimizer.step()
    d_optimizer.step()
    path = tmp_path / "train_step-1.model"  # the seed moved to step 1 (8 px)
    torch.save({"generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
                "g_running": generator.state_dict(), "g_optimizer": g_optimizer.state_dict(),
                "d_optimizer": d_optimizer.state_dict()}, path)
    config, resume = make_config(args_for(lmdb_path, tmp_path / "out", iterations=1)[:1] +
                                 ["--resume", str(path), "--out", str(tmp_path / "out"), "--iterations", "1",
                                  "--max_size", "16", "--device", "cpu"])
    assert config.init_size == 8 and config.code_dim == 16 and config.max_channels == 16
    trainer = Trainer(config, resume, log=lambda *a, **k: None)
    assert trainer.progress.fade_init and trainer.progress.alpha(trainer.schedule) < 1  # the seed fades in
    converted = ckpt.load_rosinality(path, optimizers=True)
    assert all(torch.equal(converted["generator"].state_dict()[k], v)
               for k, v in trainer.generator.state_dict().items())
    # The seed's Adam moments continue, each on its parameter (the models are checked in test_checkpoint.py).
    for optimizer, model, name in ((trainer.g_optimizer, trainer.generator, "g_optimizer"),
                                   (trainer.d_optimizer, trainer.discriminator, "d_optimizer")):
        states = {param_name: optimizer.state[param] for param_name, param in model.named_parameters()
                  if param in optimizer.state}
        assert states.keys() == converted[name].keys() and states
        for param_name, state in states.items():
            torch.testing.assert_close(state["exp_avg_sq"], converted[name][param_name]["exp_avg_sq"])


# ------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_give_clear_errors(lmdb_path, tmp_path, capsys):
    def error_of(argv):
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "no database at" in error_of(args_for(tmp_path / "missing", tmp_path / "o"))
    assert "needs 32 px too" in error_of(args_for(lmdb_path, tmp_path / "o", "--max_size", "32"))
    assert "no dataset given" in error_of(["--out", str(tmp_path / "o")])
    assert "no such file" in error_of(["--resume", str(tmp_path / "nothing.pt")])
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    assert "not a PyTorch checkpoint" in error_of(["--resume", str(tmp_path / "junk.pt")])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no checkpoint" in error_of(["--resume", str(empty)])

    # EMA-only files: this project's and the seed's NNNNNN.model.
    ema = StyledGenerator(code_dim=16, n_mlp=2, channel_base=1024, max_channels=16)
    ckpt.save(tmp_path / "ema.pt", g_running=ema)
    assert "holds only the EMA generator" in error_of(["--resume", str(tmp_path / "ema.pt")])
    seed_ema = seed_reference.StyledGenerator(code_dim=16, n_mlp=2, channel_base=1024, max_channels=16)
    torch.save(seed_ema.state_dict(), tmp_path / "010000.model")
    message = error_of(["--resume", str(tmp_path / "010000.model")])
    assert "holds only the EMA generator" in message and "generate.py" in message

    assert "--device gpu: expected auto, cpu, cuda or cuda:N" in error_of(args_for(lmdb_path, tmp_path / "o",
                                                                                   "--device", "gpu"))
    if not torch.cuda.is_available():
        assert "no CUDA GPU is visible" in error_of(args_for(lmdb_path, tmp_path / "o", "--device", "cuda"))

    run_trainer(args_for(lmdb_path, tmp_path / "run", iterations=1))
    last = tmp_path / "run" / "checkpoint" / "000001.pt"
    assert "--max_channels 32 differs from the checkpoint's 16" in error_of(["--resume", str(last),
                                                                             "--max_channels", "32"])
    # Never over another run's checkpoints, nor over the later ones of a run resumed from an earlier checkpoint.
    saved = last.read_bytes()
    message = error_of(args_for(lmdb_path, tmp_path / "run", iterations=1))
    assert "holds checkpoints past iteration 0 (up to 000001.pt) that this run would write over" in message
    shutil.copy(last, last.with_name("000003.pt"))
    assert "past iteration 1 (up to 000003.pt)" in error_of(["--resume", str(last), "--iterations", "3"])
    assert last.read_bytes() == saved
    assert sorted(p.name for p in last.parent.iterdir()) == ["000001.pt", "000003.pt"]
    assert not (tmp_path / "o").exists()  # nothing written on bad input
    with pytest.raises(TrainError, match="multiple of the number of processes"):
        config, _ = make_config(args_for(lmdb_path, tmp_path / "o", "--batch", "3"))
        Trainer(config, info=trainer_module.DistInfo(rank=0, world_size=2, enabled=False))


@pytest.mark.parametrize("option, value, message", [
    ("--ema_decay", "nan", "--ema_decay must be from 0.0 to 1.0, got nan"),
    ("--ema_decay", "2", "--ema_decay must be from 0.0 to 1.0, got 2.0"),
    ("--ema_decay", "-1", "--ema_decay must be from 0.0 to 1.0, got -1.0"),
    ("--r1_gamma", "-5", "--r1_gamma must be >= 0.0, got -5.0"),
    ("--gp_weight", "inf", "--gp_weight must be >= 0.0, got inf"),
    ("--n_mlp", "-1", "--n_mlp must be >= 0, got -1"),
    ("--code_dim", "0", "--code_dim must be >= 1, got 0"),
    ("--num_workers", "-1", "--num_workers must be >= 0, got -1"),
    ("--seed", str(2**32), f"--seed must be from 0 to {2**32 - 1}, got {2**32}"),
    ("--lr", "nan", "lr must be a finite number > 0, got nan"),
])
def test_option_values_out_of_range_are_refused(lmdb_path, tmp_path, capsys, option, value, message):
    assert main(args_for(lmdb_path, tmp_path / "o", option, value)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "o").exists()


def test_the_implementation_follows_the_environment(lmdb_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STYLEGAN_CUDA_IMPL", "fastest")
    assert main(args_for(lmdb_path, tmp_path / "o")) == 2
    assert "STYLEGAN_CUDA_IMPL must be one of auto, extension, reference, got 'fastest'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    monkeypatch.setenv("STYLEGAN_CUDA_IMPL", "reference")
    assert make_config(args_for(lmdb_path, tmp_path / "o"))[0].impl == "reference"
    assert make_config(args_for(lmdb_path, tmp_path / "o", "--impl", "auto"))[0].impl == "auto"


def damage(db, copy, kind: str, index: int) -> None:
    """Copy the database ``db`` to ``copy`` with image ``index`` at 16 px damaged: ``missing`` (the length counts an
    image more than it holds: ``index`` must be the length), ``garbage`` bytes, or an image of the ``wrong size``."""
    shutil.copytree(db, copy)
    env = lmdb.open(str(copy))
    with env.begin(write=True) as txn:
        if kind == "missing":
            txn.put(b"length", str(index + 1).encode())
        elif kind == "garbage":
            txn.put(f"16-{index:05d}".encode(), b"not an image")
        else:
            txn.put(f"16-{index:05d}".encode(), txn.get(f"8-{index:05d}".encode()))
    env.close()


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such record, though the database's length says it holds 7 images"),
    ("garbage", r"not a readable image \(UnidentifiedImageError"),
    ("wrong size", "the image is 8x8 px, not 16x16"),
])
def test_a_damaged_record_stops_the_run_with_a_checkpoint(lmdb_path, tmp_path, capsys, kind, message):
    """A record that cannot be read ends the run with an error naming the database and the key, after a checkpoint
    of the iterations done."""
    length = 7 if kind == "missing" else 6
    batches = iter(ResumableBatches(length, 4, seed=0, resolution=16))
    epoch = [key // 2 for _, batch in zip(range(2), batches) for key in batch][:length]
    index = 6 if kind == "missing" else epoch[-1]  # the last image read in the first epoch
    failing = epoch.index(index) // 4  # the iteration that reads it
    damage(lmdb_path, tmp_path / "db", kind, index)
    out = tmp_path / "run"
    assert main(args_for(tmp_path / "db", out, "--init_size", "16", "--save_every", "100")) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(rf"error: dataset: database {tmp_path / 'db'}, key '16-{index:05d}': {message}.*; the last "
                        rf"checkpoint written is {out / 'checkpoint' / f'{failing:06d}.pt'}: repair the database .* "
                        rf"--resume {out}", error), error
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [f"{failing:06d}.pt"]
    training = torch.load(out / "checkpoint" / f"{failing:06d}.pt", weights_only=True)["training"]
    assert training["iteration"] == failing and training["data_position"] == 4 * failing


def test_a_damaged_record_read_by_a_worker_ends_the_command(lmdb_path, tmp_path):
    """The worker's error reaches the command as the same message, and the command exits (it used to wait forever
    for workers kept alive by the error's traceback, which ignore the SIGTERM sent to them at exit)."""
    damage(lmdb_path, tmp_path / "db", "garbage", 0)
    command = [sys.executable, str(REPO / "train.py"), *args_for(tmp_path / "db", tmp_path / "run", "--init_size", "16",
                                                                 "--num_workers", "1")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1].startswith(f"error: dataset: database {tmp_path / 'db'}, key '16-00000': "
                                                     "not a readable image")


def test_a_run_stopped_by_a_damaged_record_resumes_exactly_once_repaired(lmdb_path, tmp_path, capsys):
    argv = ["--init_size", "16", "--save_every", "100"]
    _, full_losses = run_trainer(args_for(lmdb_path, tmp_path / "full", *argv, iterations=4))
    epoch = [key // 2 for key in ResumableBatches(6, 4, seed=0, resolution=16).epoch_keys(0).tolist()]
    damage(lmdb_path, tmp_path / "db", "garbage", epoch[-1])  # read by iteration 2
    assert main(args_for(tmp_path / "db", tmp_path / "run", *argv, iterations=4)) == 2
    _, resumed_losses = run_trainer([str(lmdb_path), "--resume", str(tmp_path / "run")])  # a repaired database
    assert sorted(resumed_losses) == [2, 3, 4]
    assert all(resumed_losses[it] == full_losses[it] for it in resumed_losses)


# ------------------------------------------------------------------------------------------------ distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RANK1_SCRIPT = """import os, signal, sys
from stylegan_cuda.train import cli, trainer
if os.environ["RANK"] == "1":
{code}
sys.exit(cli.main())
"""


def on_rank1_before_iteration(iteration: int, action: str) -> str:
    """Code for ``rank1_code``: run ``action`` in rank 1 as its iteration ``iteration`` (counted from 0) starts."""
    return f"""
run_iteration = trainer.Trainer.train_iteration
def train_iteration(self):
    if self.iteration == {iteration}:
        {action}
    return run_iteration(self)
trainer.Trainer.train_iteration = train_iteration
"""


def _torchrun_two_processes(train_args, cwd, rank1_code: str = "") -> subprocess.CompletedProcess:
    """``train.py TRAIN_ARGS`` in 2 gloo processes; ``rank1_code`` (Python, with ``trainer`` imported) runs in rank
    1 first. A run that does not end within 150 s (a rank waiting for another) fails the test."""
    script = REPO / "train.py"
    if rank1_code:
        script = Path(cwd) / "train_rank1.py"
        script.write_text(RANK1_SCRIPT.format(code=textwrap.indent(textwrap.dedent(rank1_code), "    ")))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), *train_args]
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    # faulthandler: a process that hangs prints where each of its threads is when SIGABRT ends it (below).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath, "PYTHONFAULTHANDLER": "1"}
    # Its own session, so that a run that hangs is ended with its ranks (torchrun starts them in sessions of their
    # own, so they are found by their parent).
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        listing = subprocess.run(["ps", "-o", "pid=,stat=,args=", "--ppid", str(process.pid)], capture_output=True,
                                 text=True).stdout
        ranks = [int(line.split()[0]) for line in listing.splitlines()]
        for pid in [*ranks, process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
            time.sleep(1)  # one stack dump after the other, not interleaved
        try:
            stdout, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            for pid in [process.pid, *ranks]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"torchrun with 2 gloo processes did not end in 150 s; its processes then:\n{listing}\n"
                    f"{(stdout + stderr)[-12000:]}")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(s in output for s in ("EADDRINUSE", "Address already in use",
                                                           "Connection refused", "RendezvousConnectionError")):
        pytest.skip(f"torchrun could not start its rendezvous here: {output[-500:]}")
    return result


def rank_tracebacks(output: str) -> list[str]:
    """The tracebacks of the ranks in torchrun's output (torchrun prefixes their lines with ``[rankN]:``; its own
    report of failed ranks is not one of them)."""
    return re.findall(r"\[rank\d+\]: Traceback.*", output)


def _average_on_rank(rank, world_size, store):
    """One rank of test_gradients_and_logged_losses_are_averaged_over_the_ranks."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        info = DistInfo(rank, world_size, rank, enabled=True)
        params = [nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(1))]
        params[0].grad = torch.full((2, 3), float(rank + 1))
        params[1].grad = torch.arange(4.0) * (rank + 1)  # the third has no gradient, on every rank
        all_reduce_gradients(params, info)
        torch.testing.assert_close(params[0].grad, torch.full((2, 3), 1.5))
        torch.testing.assert_close(params[1].grad, torch.arange(4.0) * 1.5)
        assert params[2].grad is None
        means = mean_over_ranks({"d": torch.tensor(2.0 * rank), "g": torch.tensor(-1.0)}, info)
        torch.testing.assert_close(means, {"d": torch.tensor(1.0), "g": torch.tensor(-1.0)})
    finally:
        dist.destroy_process_group()


def test_gradients_and_logged_losses_are_averaged_over_the_ranks(tmp_path):
    """Every rank steps with the mean of the ranks' gradients (the batch is split, the loss is a mean over it)."""
    torch.multiprocessing.spawn(_average_on_rank, args=(2, tmp_path / "store"), nprocs=2)


def test_two_process_gloo_run(lmdb_path, tmp_path):
    out = tmp_path / "ddp"
    result = _torchrun_two_processes(args_for(lmdb_path, out, iterations=6), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("training 8 -> 16 px on cpu x2") == 1  # only rank 0 logs
    assert "now at 16 px" in output
    data = torch.load(out / "checkpoint" / "000006.pt", weights_only=True)
    training = data["training"]
    assert training["world_size"] == 2 and len(training["rng"]) == 2
    # The global batch of 4 is split 2 + 2; the schedule counts all of it.
    assert training["progress"]["step"] == 2 and training["progress"]["used_sample"] == 4
    assert training["iteration"] == 6

    # Rank 0's refusal to write over those checkpoints stops both ranks (none waits for the other).
    saved = (out / "checkpoint" / "000006.pt").read_bytes()
    again = _torchrun_two_processes(args_for(lmdb_path, out, iterations=6), tmp_path)
    assert again.returncode != 0
    assert (again.stdout + again.stderr).count("that this run would write over") == 2
    assert (out / "checkpoint" / "000006.pt").read_bytes() == saved


def test_two_process_damaged_record_read_by_one_rank_stops_both_with_a_checkpoint(lmdb_path, tmp_path):
    """Rank 1 alone reads the damaged record: both ranks end with its error, after a checkpoint of the iterations
    done (rank 0 used to wait for rank 1 in the gradients' all-reduce, then fail with gloo's traceback, and the
    iterations were lost)."""
    read = [[[key // 2 for key in batch] for _, batch in zip(range(2), ResumableBatches(6, 2, 2, 16, rank, 2))]
            for rank in range(2)]
    assert 0 in read[1][1] and 0 not in read[1][0] + read[0][0] + read[0][1]  # with --seed 2, at iteration 1
    damage(lmdb_path, tmp_path / "db", "garbage", 0)
    out = tmp_path / "run"
    result = _torchrun_two_processes(args_for(tmp_path / "db", out, "--init_size", "16", "--seed", "2",
                                              "--save_every", "100"), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and not rank_tracebacks(output), output[-3000:]
    assert re.search(rf"error: dataset: database {tmp_path / 'db'}, key '16-00000': not a readable image .*; the last "
                     rf"checkpoint written is {out / 'checkpoint' / '000001.pt'}: repair the database", output), output
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["000001.pt"]
    training = torch.load(out / "checkpoint" / "000001.pt", weights_only=True)["training"]
    assert training["iteration"] == 1 and training["data_position"] == 2 and len(training["rng"]) == 2


def test_two_process_file_that_rank0_cannot_write_ends_both_ranks(lmdb_path, tmp_path):
    """Rank 0 cannot write a sample grid (a folder is in its place): both ranks end with that error (rank 1 used to
    fail with gloo's traceback, waiting for rank 0 in the next iteration)."""
    out = tmp_path / "run"
    (out / "sample" / "000004.png").mkdir(parents=True)
    result = _torchrun_two_processes(args_for(lmdb_path, out), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and not rank_tracebacks(output), output[-3000:]
    assert f"error: cannot write the sample grid {out / 'sample' / '000004.png'}" in output


def test_two_process_rank_that_dies_ends_the_other_with_an_error(lmdb_path, tmp_path):
    """Rank 1 is killed (SIGKILL): rank 0 ends at once with an error naming the last checkpoint, not a traceback."""
    out = tmp_path / "run"
    result = _torchrun_two_processes(args_for(lmdb_path, out, iterations=8), tmp_path,
                                     on_rank1_before_iteration(4, "os.kill(os.getpid(), signal.SIGKILL)"))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and not rank_tracebacks(output), output[-3000:]
    assert re.search(r"error: a collective operation of the processes failed \(.+\): most likely another process "
                     r"of this run ended or stopped answering, and its own output says why; the last checkpoint "
                     rf"written is {out / 'checkpoint' / '000004.pt'}\n", output), output


def test_two_process_signal_twice_on_a_rank_still_stops_with_a_checkpoint(lmdb_path, tmp_path):
    """A rank gets SIGTERM twice, as when a batch scheduler signals every process of the job and torchrun forwards
    its own: the ranks stop after the iteration with a checkpoint (the repeat used to stop that rank at once, and no
    checkpoint was written)."""
    out = tmp_path / "run"
    twice = "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGTERM)"
    result = _torchrun_two_processes(args_for(lmdb_path, out, "--save_every", "100"), tmp_path,
                                     on_rank1_before_iteration(2, twice))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "interrupted at once" not in output, output[-3000:]
    assert f"[000003] stopped by SIGTERM: checkpoint {out / 'checkpoint' / '000003.pt'}" in output, output[-3000:]
    assert "exitcode  : 143" in output, output[-3000:]  # torchrun's report: 128 + SIGTERM
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["000003.pt"]


def test_two_process_ranks_given_different_options_are_refused(lmdb_path, tmp_path):
    """Rank 1 is started with another --batch: both ranks refuse to train (they used to train without an error, each
    with its own batch, and rank 0's checkpoint recorded its own)."""
    out = tmp_path / "run"
    result = _torchrun_two_processes(args_for(lmdb_path, out), tmp_path, 'sys.argv += ["--batch", "8"]')
    output = result.stdout + result.stderr
    assert result.returncode != 0 and not rank_tracebacks(output), output[-3000:]
    assert output.count("error: the processes of this run differ in --batch: 4 on rank 0, 8 on rank 1; start every "
                        "process with the same options, dataset and checkpoint") >= 1, output[-3000:]
    assert not (out / "checkpoint").exists()


@pytest.mark.parametrize("world_sizes", [(1, 2), (2, 1)])
def test_resuming_with_another_number_of_processes_goes_on_with_the_epoch(lmdb_path, tmp_path, world_sizes):
    """A rank's data position counts its own share: resumed by another number of processes, the ranks go on with the
    images of the epoch not shown yet (they used to skip or repeat part of it). Ranks are simulated in one process
    (``DistInfo`` without a process group); both take the same epoch order."""
    written_by, resumed_by = world_sizes
    argv = args_for(lmdb_path, tmp_path / "run", "--init_size", "16", iterations=1)
    config, _ = make_config(argv)
    Trainer(config, info=trainer_module.DistInfo(0, written_by), log=lambda *a, **k: None).run()
    epoch = ResumableBatches(6, 4, 0, 16).epoch_keys(0).tolist()  # the order for 1 and for 2 processes
    rest = []  # the epoch's first 4 keys were taken (by 1 rank, or 2 by each of 2)
    for rank in range(resumed_by):
        config, resume = make_config([str(lmdb_path), "--resume", str(tmp_path / "run"), "--iterations", "2"])
        trainer = Trainer(config, resume, info=trainer_module.DistInfo(rank, resumed_by), log=lambda *a, **k: None)
        batches = ResumableBatches(6, trainer._local_batch(), 0, 16, rank, resumed_by, trainer.data_position)
        rest += next(iter(batches))[:2 // resumed_by]
    assert sorted(rest) == sorted(epoch[4:])
