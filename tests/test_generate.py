"""generate.py: grids of the right sizes, resolution read from the checkpoint, truncation, seeds, the seed's files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import seed_reference
from stylegan_cuda import checkpoint as ckpt
from stylegan_cuda.data import prepare_database
from stylegan_cuda.data.demo import write_demo_images
from stylegan_cuda.generate import GenerateError, Sampler, load_generator, make_grid, parse_mixing_ranges, save_grid
from stylegan_cuda.generate import cli
from stylegan_cuda.generate.cli import main
from stylegan_cuda.generate.sampling import MAX_SEED, mean_style
from stylegan_cuda.models import MAX_STEP, StyledGenerator
from stylegan_cuda.train.cli import make_config
from stylegan_cuda.train.trainer import Trainer

TINY = dict(code_dim=16, n_mlp=2, channel_base=1024, max_channels=16)


@pytest.fixture(scope="module")
def train_checkpoint(tmp_path_factory):
    """A train.py checkpoint at 16 px (after one iteration; the weights are random, the format is what counts)."""
    root = tmp_path_factory.mktemp("gen")
    images = root / "images"
    write_demo_images(images)
    prepare_database(images, root / "db", sizes=(16,), n_worker=1, stream=open(os.devnull, "w"))
    config, _ = make_config([str(root / "db"), "--out", str(root / "run"), "--init_size", "16", "--max_size", "16",
                             "--iterations", "1", "--batch", "2", "--device", "cpu", "--channel_base", "1024",
                             "--max_channels", "16", "--code_dim", "16", "--n_mlp", "2"])
    trainer = Trainer(config, log=lambda *a, **k: None)
    trainer.run()
    return root / "run" / "checkpoint" / "000001.pt"


def size_of(path):
    return Image.open(path).size


def test_grid_layout():
    images = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = make_grid(images, ncol=2, padding=1, pad_value=7)
    assert grid.shape == (1 + 2 * 5, 1 + 2 * 5, 3)
    assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 128).all() and (grid[6:10, 1:5] == 255).all()
    assert (grid[0] == 7).all() and (grid[6:10, 6:10] == 7).all()  # padding and the empty cell


def test_grid_clamps_pixels_and_keeps_each_images_shape():
    images = torch.stack([torch.full((3, 2, 5), v) for v in (-3.0, 2.0)])  # 2 x 5 px, out of [-1, 1]
    grid = make_grid(images, ncol=1, padding=1)
    assert grid.shape == (1 + 2 * 3, 1 + 6, 3)
    assert (grid[1:3, 1:6] == 0).all() and (grid[4:6, 1:6] == 255).all()
    with pytest.raises(ValueError, match=r"expected images \[N, 3, H, W\], got \[2, 1, 2, 5\]"):
        make_grid(images[:, :1], ncol=1)
    with pytest.raises(ValueError, match="ncol must be >= 1, got 0"):
        make_grid(images, ncol=0)


def test_a_failed_png_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    images = torch.zeros(1, 3, 4, 4)
    path = save_grid(images, tmp_path / "grid.png", ncol=1)
    before = path.read_bytes()

    def disk_full(self, file, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"half a PNG")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_grid(images + 1, path, ncol=1)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["grid.png"]


def test_writes_sample_and_mixing_grids(train_checkpoint, tmp_path, capsys):
    assert main([str(train_checkpoint), "--out", str(tmp_path), "--n_row", "2", "--n_col", "3", "--n_mixing", "2",
                 "--n_mean", "64", "--device", "cpu"]) == 0
    assert "16 px" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.png", "sample_mixing_0.png", "sample_mixing_1.png"]
    cell = 16 + 2
    assert size_of(tmp_path / "sample.png") == (3 * cell + 2, 2 * cell + 2)
    assert size_of(tmp_path / "sample_mixing_0.png") == (4 * cell + 2, 3 * cell + 2)
    mixing = np.array(Image.open(tmp_path / "sample_mixing_0.png")).astype(int)
    assert (mixing[2:18, 2:18] == 0).all()  # the blank corner (-1, as the seed)

    # Mixing every block (0-2 at 16 px) gives each column's source: the rows of targets repeat the top row.
    every_block = tmp_path / "every_block"
    assert main([str(train_checkpoint), "--out", str(every_block), "--n_row", "2", "--n_col", "3", "--n_mixing", "1",
                 "--mixing_range", "0,2", "--n_mean", "64", "--device", "cpu"]) == 0
    mixing = np.array(Image.open(every_block / "sample_mixing_0.png")).astype(int)
    columns = mixing[:, 2 + cell:]  # the sources and the mixed images
    for row in (1, 2):
        assert np.abs(columns[2 + row * cell:row * cell + cell] - columns[2:cell]).max() <= 1, row

    named = tmp_path / "named"
    assert main([str(train_checkpoint), "--out", str(named), "--mixing_range", "all", "--n_mixing", "1",
                 "--n_mean", "64", "--device", "cpu"]) == 0
    # At 16 px only the coarse (4-8 px) and middle (16 px) blocks exist.
    assert sorted(p.name for p in named.iterdir()) == ["sample.png", "sample_mixing_coarse_0.png",
                                                       "sample_mixing_middle_0.png"]


def test_same_seed_same_images_other_seed_other_images(train_checkpoint, tmp_path):
    run_folder = train_checkpoint.parents[1]  # its latest checkpoint, the same file
    for name, seed, source in (("a", "1", train_checkpoint), ("b", "1", run_folder), ("c", "2", train_checkpoint)):
        assert main([str(source), "--out", str(tmp_path / name), "--seed", seed, "--n_mixing", "0",
                     "--n_mean", "64", "--device", "cpu"]) == 0
    read = lambda name: np.array(Image.open(tmp_path / name / "sample.png"))  # noqa: E731
    assert (read("a") == read("b")).all() and not (read("a") == read("c")).all()


def test_truncation_zero_gives_one_image(train_checkpoint):
    loaded = load_generator(train_checkpoint)
    images = Sampler(loaded, truncation=0.0, n_mean=64).sample(5)
    # Identical up to float rounding (a batch's last, unvectorized row rounds differently).
    torch.testing.assert_close(images, images[:1].expand_as(images), atol=1e-5, rtol=0)
    images = Sampler(loaded, truncation=0.7, n_mean=64).sample(5)
    assert not torch.allclose(images[0], images[1])


def test_mean_style_is_the_mean_of_the_seeded_latents_styles(train_checkpoint):
    """The truncation centre: the mean style of ``count`` latents drawn from ``seed``, however they are chunked."""
    model = load_generator(train_checkpoint).model
    latents = torch.randn(96, 16, generator=torch.Generator().manual_seed(5))
    expected = model.mapping(latents).mean(0, keepdim=True)
    for chunk in (1024, 32):
        torch.testing.assert_close(mean_style(model, count=96, chunk=chunk, seed=5), expected)
    with pytest.raises(GenerateError, match="the mean style needs at least one latent, got 0"):
        mean_style(model, count=0)


def test_the_batch_size_does_not_change_the_images(train_checkpoint):
    loaded = load_generator(train_checkpoint)
    small, large = (Sampler(loaded, batch=batch, n_mean=64).sample(5) for batch in (2, 16))
    torch.testing.assert_close(small, large, atol=1e-4, rtol=0)  # the batches round differently


def test_mixing_every_block_gives_the_source(train_checkpoint):
    loaded = load_generator(train_checkpoint)
    grid = Sampler(loaded, truncation=0.7, n_mean=64).style_mixing(n_source=3, n_target=2, mixing_range=(0, 2))
    assert grid.shape == (3 * 4, 3, 16, 16)
    sources = grid[1:4]
    for row in (1, 2):
        torch.testing.assert_close(grid[4 * row + 1:4 * row + 4], sources)
    grid = Sampler(loaded, n_mean=64).style_mixing(n_source=3, n_target=2, mixing_range=(0, 1))
    assert not torch.allclose(grid[5:8], grid[1:4])  # the fine block keeps the target's style
    # Each row starts with its target. A sampler of the same seed draws the same latents: sources, then targets.
    twin = Sampler(loaded, n_mean=64)
    _, targets = twin.latents(3), twin.latents(2)
    torch.testing.assert_close(grid[[4, 8]], twin.images(targets))


def test_size_from_checkpoint_and_mismatch(train_checkpoint, tmp_path, capsys):
    assert load_generator(train_checkpoint).resolution == 16
    assert load_generator(train_checkpoint, size=16).resolution == 16
    assert main([str(train_checkpoint), "--out", str(tmp_path / "x"), "--size", "32", "--device", "cpu"]) == 2
    assert "--size 32 does not match" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # A model-only file does not record its resolution: --size is needed.
    ckpt.save(tmp_path / "models.pt", g_running=StyledGenerator(**TINY))
    with pytest.raises(GenerateError, match="pass --size"):
        load_generator(tmp_path / "models.pt")
    assert load_generator(tmp_path / "models.pt", size=32).resolution == 32
    with pytest.raises(GenerateError, match="--size 8 does not match"):
        load_generator(train_checkpoint, size=8)
    with pytest.raises(GenerateError, match="--size must be one of 4, 8, 16, 32, 64, 128, 256, 512, 1024, got 33"):
        load_generator(tmp_path / "models.pt", size=33)


def test_train_step_names_give_the_resolution_trained_to(tmp_path):
    """The seed writes train_step-N.model on moving to step N (N = 9: at the end), its models trained to step N - 1."""
    state = seed_reference.StyledGenerator(**TINY).state_dict()
    for number, resolution in ((0, None), (1, 4), (9, 1024), (10, None)):
        path = tmp_path / f"train_step-{number}.model"
        torch.save({"g_running": state}, path)
        if resolution is None:  # no such step: the name records no resolution
            with pytest.raises(GenerateError, match="pass --size"):
                load_generator(path)
        else:
            assert load_generator(path).resolution == resolution


def test_the_seed_files(tmp_path):
    torch.manual_seed(0)
    seed_generator = seed_reference.StyledGenerator(**TINY)
    torch.save(seed_generator.state_dict(), tmp_path / "010000.model")
    torch.save({"generator": seed_generator.state_dict(), "g_running": seed_generator.state_dict(),
                "discriminator": seed_reference.Discriminator(channel_base=1024, max_channels=16).state_dict()},
               tmp_path / "train_step-3.model")
    assert load_generator(tmp_path / "train_step-3.model").resolution == 16  # trained through step 2
    with pytest.raises(GenerateError, match="pass --size"):
        load_generator(tmp_path / "010000.model")
    loaded = load_generator(tmp_path / "010000.model", size=8)
    sampler = Sampler(loaded, truncation=1.0)
    latents = torch.randn(2, 16)
    noise = [n.expand(2, -1, -1, -1) for n in sampler.fixed_noise]
    expected = seed_generator(latents, noise=noise, step=1, alpha=1)
    torch.testing.assert_close(sampler.images(latents), expected, atol=1e-4, rtol=1e-4)
    assert main([str(tmp_path / "010000.model"), "--out", str(tmp_path / "out"), "--size", "8", "--n_mixing", "1",
                 "--n_mean", "64", "--device", "cpu"]) == 0


def test_a_failed_write_is_a_clear_error(train_checkpoint, tmp_path, monkeypatch, capsys):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "save_grid", disk_full)
    assert main([str(train_checkpoint), "--out", str(tmp_path), "--n_mean", "64", "--device", "cpu"]) == 2
    assert "cannot write " + str(tmp_path / "sample.png") + ": [Errno 28] No space left" in capsys.readouterr().err


def test_bad_inputs(train_checkpoint, tmp_path, capsys):
    def error_of(argv):
        assert main(argv + ["--out", str(tmp_path / "never"), "--device", "cpu"]) == 2
        return capsys.readouterr().err

    assert "missing.pt: no such file" in error_of([str(tmp_path / "missing.pt")])
    assert "holds no checkpoint NNNNNN.pt" in error_of([str(tmp_path)])
    (tmp_path / "junk.pt").write_text("junk")
    assert "not a PyTorch checkpoint" in error_of([str(tmp_path / "junk.pt")])
    torch.save({"discriminator": seed_reference.Discriminator(channel_base=1024, max_channels=16).state_dict()},
               tmp_path / "d_only.model")
    assert "holds no generator" in error_of([str(tmp_path / "d_only.model"), "--size", "8"])
    assert "blocks 4-8 do not exist at 16 px" in error_of([str(train_checkpoint), "--mixing_range", "fine"])
    assert "expected LO,HI" in error_of([str(train_checkpoint), "--mixing_range", "big"])
    assert "--n_row must be >= 1" in error_of([str(train_checkpoint), "--n_row", "0"])
    assert "--n_col must be >= 1, got 0" in error_of([str(train_checkpoint), "--n_col", "0"])
    assert "--n_mixing must be >= 0, got -1" in error_of([str(train_checkpoint), "--n_mixing", "-1"])
    assert "--mixing_range '2,1': LO must be <= HI" in error_of([str(train_checkpoint), "--mixing_range", "2,1"])
    # A sample grid that fits, whose mixing grids (a row and a column more) do not: refused before any image is made
    # (--batch 0, refused later, keeps a test of code without the check from drawing 500000 images).
    assert "make a 9000020 x 38 grid: more than" in error_of([str(train_checkpoint), "--n_row", "1",
                                                              "--n_col", "500000", "--batch", "0"])
    assert "make a 1640000 x 18002 grid: more than" in error_of([str(train_checkpoint), "--n_row", "1000",
                                                                 "--n_col", "91111"])
    assert main([str(train_checkpoint), "--out", str(tmp_path / "never"), "--device", "gpu"]) == 2
    assert "--device gpu: expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    assert parse_mixing_ranges(["0,1", "middle"], step=3) == [("0-1", (0, 1)), ("middle", (2, 3))]


@pytest.mark.parametrize("option, value, message", [
    ("--truncation", "inf", "truncation must be a finite number >= 0, got inf"),
    ("--truncation", "nan", "truncation must be a finite number >= 0, got nan"),
    ("--truncation", "-0.5", "truncation must be a finite number >= 0, got -0.5"),
    ("--seed", "99999999999999999999", f"seed must be from 0 to {MAX_SEED}"),
    ("--seed", "-1", f"seed must be from 0 to {MAX_SEED}"),
    ("--batch", "0", "batch must be >= 1, got 0"),
    ("--n_mean", "0", "n_mean must be >= 1, got 0"),
])
def test_bad_numbers_are_errors_before_out_is_made(train_checkpoint, tmp_path, capsys, option, value, message):
    assert main([str(train_checkpoint), "--out", str(tmp_path / "never"), option, value, "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_out_is_made_with_its_parents_and_must_be_a_folder(train_checkpoint, tmp_path, capsys):
    out = tmp_path / "runs" / "a" / "grids"
    assert main([str(train_checkpoint), "--out", str(out), "--n_mixing", "0", "--n_mean", "64", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sample.png"]
    (tmp_path / "a_file").write_text("")
    assert main([str(train_checkpoint), "--out", str(tmp_path / "a_file"), "--n_mean", "64", "--device", "cpu"]) == 2
    assert f"--out {tmp_path / 'a_file'}: " in capsys.readouterr().err


def test_the_defaults_are_the_documented_ones(train_checkpoint, tmp_path):
    """3 x 5 samples at truncation 0.7 from seed 0 with fixed noise, and 4 mixing grids of blocks 0-1 (the seed's)."""
    explicit = ["--n_row", "3", "--n_col", "5", "--truncation", "0.7", "--seed", "0", "--noise", "fixed",
                "--n_mixing", "4", "--mixing_range", "0,1"]
    for name, options in (("default", []), ("explicit", explicit)):
        assert main([str(train_checkpoint), "--out", str(tmp_path / name), "--n_mean", "64", "--device", "cpu",
                     *options]) == 0
    names = sorted(p.name for p in (tmp_path / "default").iterdir())
    assert names == ["sample.png"] + [f"sample_mixing_{j}.png" for j in range(4)]
    for name in names:
        assert (tmp_path / "default" / name).read_bytes() == (tmp_path / "explicit" / name).read_bytes(), name


def test_the_implementation_follows_the_environment(train_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STYLEGAN_CUDA_IMPL", "fastest")
    assert main([str(train_checkpoint), "--out", str(tmp_path / "never"), "--device", "cpu"]) == 2
    assert "STYLEGAN_CUDA_IMPL must be one of auto, extension, reference, got 'fastest'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    monkeypatch.setenv("STYLEGAN_CUDA_IMPL", "reference")
    assert load_generator(train_checkpoint).model.synthesis.impl == "reference"


def test_the_largest_seed(train_checkpoint):
    images = Sampler(load_generator(train_checkpoint), truncation=0.7, seed=MAX_SEED, n_mean=64).sample(2)
    assert images.isfinite().all()


def test_non_finite_generators_write_no_image(train_checkpoint, tmp_path, capsys):
    data = torch.load(train_checkpoint, weights_only=True)
    data["models"]["g_running"]["state_dict"]["synthesis.to_rgb.0.bias"][0] = float("nan")
    torch.save(data, tmp_path / "diverged.pt")
    assert main([str(tmp_path / "diverged.pt"), "--out", str(tmp_path / "never"), "--device", "cpu"]) == 2
    assert "diverged.pt: its EMA generator has NaN or infinite weights" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    # Finite weights that overflow draw infinite pixels: an error too, not a black or white grid.
    loaded = load_generator(train_checkpoint)
    with torch.no_grad():
        for parameter in loaded.model.synthesis.to_rgb.parameters():
            parameter.fill_(3e38)
    with pytest.raises(GenerateError, match=f"the generator of {train_checkpoint} drew NaN or infinite pixels"):
        Sampler(loaded, n_mean=64).sample(2)


def test_checkpoint_of_the_wrong_structure(train_checkpoint, tmp_path, capsys):
    data = torch.load(train_checkpoint, weights_only=True)
    data["training"]["progress"]["step"] = 42
    torch.save(data, tmp_path / "bad_step.pt")
    assert main([str(tmp_path / "bad_step.pt"), "--out", str(tmp_path / "never"), "--device", "cpu"]) == 2
    assert "bad_step.pt: the training state's progress.step is 42: steps are 0 to 8" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_named_mixing_ranges_are_the_papers_blocks():
    """coarse = blocks 0-1 (4-8 px), middle = 2-3 (16-32 px), fine = 4-8 (64-1024 px); all = those that exist."""
    papers = [("coarse", (0, 1)), ("middle", (2, 3)), ("fine", (4, MAX_STEP))]
    assert parse_mixing_ranges(["coarse", "middle", "fine"], step=MAX_STEP) == papers
    assert parse_mixing_ranges(["all"], step=MAX_STEP) == papers
    assert parse_mixing_ranges(["all"], step=2) == [("coarse", (0, 1)), ("middle", (2, 2))]
    assert parse_mixing_ranges(["3:9"], step=5) == [("3-5", (3, 5))]


def test_fixed_noise_is_shared_by_every_image_random_noise_is_not(train_checkpoint):
    loaded = load_generator(train_checkpoint)
    with torch.no_grad():  # the noise weights start at 0: give the noise an effect
        for name, parameter in loaded.model.named_parameters():
            if "noise" in name:
                parameter.fill_(1.0)
    twice = torch.randn(1, 16).expand(2, -1)
    fixed = Sampler(loaded, truncation=1.0, noise="fixed").images(twice)
    torch.testing.assert_close(fixed[1], fixed[0], atol=1e-5, rtol=0)
    drawn = Sampler(loaded, truncation=1.0, noise="random").images(twice)
    assert not torch.allclose(drawn[1], drawn[0], atol=1e-3)
    with pytest.raises(GenerateError, match="noise must be fixed or random, got 'none'"):
        Sampler(loaded, noise="none")


def test_the_fade_in_is_read_from_a_train_checkpoint(train_checkpoint, tmp_path):
    """A checkpoint written during a fade-in draws at its alpha, not at 1."""
    data = torch.load(train_checkpoint, weights_only=True)
    data["training"]["alpha"] = 0.25
    torch.save(data, tmp_path / "fading.pt")
    loaded = load_generator(tmp_path / "fading.pt")
    assert loaded.alpha == 0.25 and "alpha 0.25" in loaded.description
    sampler, latents = Sampler(loaded, truncation=1.0), torch.randn(2, 16)
    noise = [n.expand(2, -1, -1, -1) for n in sampler.fixed_noise]
    expected = loaded.model(latents, noise=noise, step=loaded.step, alpha=0.25)
    torch.testing.assert_close(sampler.images(latents), expected, atol=1e-5, rtol=0)


def test_a_single_mixing_range_keeps_the_seeds_file_names(train_checkpoint, tmp_path):
    """One --mixing_range (given or named): sample_mixing_J.png; the range is named only where there are several."""
    assert main([str(train_checkpoint), "--out", str(tmp_path), "--mixing_range", "coarse", "--n_mixing", "2",
                 "--n_row", "1", "--n_col", "1", "--n_mean", "64", "--device", "cpu"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.png", "sample_mixing_0.png", "sample_mixing_1.png"]


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_draws_the_float32_images_within_half_precision(train_checkpoint, tmp_path, amp, dtype):
    """``--amp``: the same images up to a few roundings of the half type (measured: about 5 of its epsilons of the
    largest pixel, for this untrained model's pixels of up to 17)."""
    loaded = load_generator(train_checkpoint)
    full, half = (Sampler(loaded, n_mean=64, amp=mode).sample(4) for mode in ("off", amp))
    assert not torch.equal(half, full)  # autocast did act
    error, scale = (half - full).abs().max().item(), full.abs().max().item()
    assert error <= 16 * torch.finfo(dtype).eps * scale, f"{amp}: {error:.3g} against pixels up to {scale:.3g}"
    assert main([str(train_checkpoint), "--out", str(tmp_path), "--n_mixing", "0", "--n_mean", "64", "--device", "cpu",
                 "--amp", amp]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.png"]


def test_channels_last_draws_the_same_images(train_checkpoint, tmp_path):
    conv = load_generator(train_checkpoint, channels_last=True).model.synthesis.blocks[1].conv2.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    options = ["--n_mixing", "0", "--n_mean", "64", "--device", "cpu"]
    assert main([str(train_checkpoint), "--out", str(tmp_path / "nchw"), *options]) == 0
    assert main([str(train_checkpoint), "--out", str(tmp_path / "nhwc"), *options, "--channels_last"]) == 0
    nchw, nhwc = (np.asarray(Image.open(tmp_path / name / "sample.png"), dtype=np.int16) for name in ("nchw", "nhwc"))
    assert np.abs(nchw - nhwc).max() <= 1  # 8-bit pixels: at most a rounding apart


def test_float16_overflow_is_an_error_that_suggests_bfloat16(train_checkpoint):
    loaded = load_generator(train_checkpoint)
    with torch.no_grad():
        for parameter in loaded.model.synthesis.to_rgb.parameters():
            parameter.fill_(1e5)  # finite in float32, past float16's 65504
    assert Sampler(loaded, n_mean=64).sample(2).isfinite().all()
    with pytest.raises(GenerateError, match="float16 overflows where float32 does not: try --amp bf16 or off"):
        Sampler(loaded, n_mean=64, amp="fp16").sample(2)
    with pytest.raises(GenerateError, match="amp must be one of off, bf16, fp16, got 'fp8'"):
        Sampler(loaded, n_mean=64, amp="fp8")
