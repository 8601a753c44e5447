"""``generate.py``: a sample grid and style-mixing grids from a checkpoint (this project's or the seed's)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..ops.dispatch import IMPL_HELP, IMPLS, check_impl
from ..train.distributed import DeviceError, resolve_device
from ..train.step import AMP_MODES
from .grid import MAX_GRID_PIXELS, grid_size, save_grid
from .sampling import SEED_RANGE, GenerateError, Sampler, load_generator, parse_mixing_ranges


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="generate.py",
        description="Write OUT/sample.png (n_row x n_col truncated samples) and style-mixing grids from a checkpoint "
                    "of train.py (DIR/checkpoint/NNNNNN.pt, or DIR for its latest) or of the seed "
                    "(train_step-N.model, NNNNNN.model). The resolution is read from the checkpoint.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG grids (created)")
    p.add_argument("--size", type=int, help="resolution; only needed for files that do not record it (the seed's "
                   "NNNNNN.model); an error if it disagrees with the checkpoint")
    p.add_argument("--n_row", type=int, default=3, help="rows of the sample grid; targets of a mixing grid (default 3)")
    p.add_argument("--n_col", type=int, default=5, help="columns of the sample grid; sources of a mixing grid "
                   "(default 5)")
    p.add_argument("--truncation", type=float, default=0.7,
                   help="style = mean + truncation * (style - mean), a finite number >= 0; 1 = none (default 0.7)")
    p.add_argument("--n_mixing", type=int, default=4, help="style-mixing grids per range (default 4; the seed: 20)")
    p.add_argument("--mixing_range", action="append", metavar="LO,HI|coarse|middle|fine|all",
                   help="blocks taking the source's styles (block i = 4 * 2**i px); repeatable; default 0,1 as the "
                        "seed; coarse = 0,1, middle = 2,3, fine = 4,8; all = the three that exist")
    p.add_argument("--noise", choices=("fixed", "random"), default="fixed",
                   help="fixed: one noise map shared by every image (default); random: per image")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and noise, 0 to 2**63 - 1 (default 0)")
    p.add_argument("--n_mean", type=int, default=10 * 1024, help="latents averaged for the mean style (default 10240)")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--device", default="auto", help="auto (a GPU if any), cpu, cuda, cuda:N")
    p.add_argument("--impl", choices=IMPLS, help=IMPL_HELP)
    p.add_argument("--amp", choices=AMP_MODES, default="off",
                   help="the generator's forward passes under bf16 or fp16 autocast: faster where the device has "
                        "fast half-precision units, a little less precise (default off)")
    p.add_argument("--channels_last", action="store_true",
                   help="the generator's weights in channels_last memory format (NHWC): the same images up to float "
                        "rounding, faster convolutions on recent GPUs and on CPUs")
    return p


def generate(args) -> list[Path]:
    """Write the grids of ``args`` (parsed by :func:`build_parser`); returns the paths written."""
    for name in ("n_row", "n_col"):
        if getattr(args, name) < 1:
            raise GenerateError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.n_mixing < 0:
        raise GenerateError(f"--n_mixing must be >= 0, got {args.n_mixing}")
    try:
        device, impl = resolve_device(args.device), check_impl(args.impl)
    except (DeviceError, ValueError) as error:  # ValueError: a bad STYLEGAN_CUDA_IMPL
        raise GenerateError(str(error)) from None
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # subnormal floats slow CPU kernels down many times
    loaded = load_generator(args.checkpoint, args.size, impl=impl, device=device, channels_last=args.channels_last)
    ranges = parse_mixing_ranges(args.mixing_range or [f"{SEED_RANGE[0]},{SEED_RANGE[1]}"], loaded.step)
    grids = [(args.n_row, args.n_col)] + ([(args.n_row + 1, args.n_col + 1)] if args.n_mixing else [])
    for rows, cols in grids:  # before any image is made
        height, width = grid_size(rows * cols, cols, loaded.resolution, loaded.resolution)
        if height * width > MAX_GRID_PIXELS:
            raise GenerateError(f"--n_row {args.n_row} x --n_col {args.n_col} at {loaded.resolution} px make a "
                                f"{width} x {height} grid: more than {MAX_GRID_PIXELS} pixels")
    print(f"{args.checkpoint}: {loaded.description}")
    sampler = Sampler(loaded, truncation=args.truncation, seed=args.seed, noise=args.noise, batch=args.batch,
                      n_mean=args.n_mean, device=device, amp=args.amp)  # checks its options before --out is made
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GenerateError(f"--out {out}: {error}") from None
    written = [_save(sampler.sample(args.n_row * args.n_col), out / "sample.png", ncol=args.n_col)]
    single = args.mixing_range is None or len(ranges) == 1
    for label, mixing_range in ranges:
        for j in range(args.n_mixing):
            name = f"sample_mixing_{j}.png" if single else f"sample_mixing_{label}_{j}.png"
            images = sampler.style_mixing(args.n_col, args.n_row, mixing_range)
            written.append(_save(images, out / name, ncol=args.n_col + 1))
    return written


def _save(images: torch.Tensor, path: Path, ncol: int) -> Path:
    try:
        return save_grid(images, path, ncol=ncol)
    except OSError as error:  # the disk is full, say
        raise GenerateError(f"cannot write {path}: {error}") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = generate(args)
    except (GenerateError, ckpt.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} image(s) to {args.out}: {', '.join(p.name for p in written[:3])}"
          f"{', ...' if len(written) > 3 else ''}")
    return 0
