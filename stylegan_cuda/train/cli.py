"""``train.py``'s command line: its options, the options a ``--resume`` run takes from its checkpoint, and
:func:`main`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

from .. import checkpoint as ckpt
from ..ops.dispatch import IMPL_HELP, IMPLS, check_impl
from . import distributed
from .config import DEFAULTS, MODEL_OPTIONS, TrainConfig, TrainError
from .distributed import DistInfo
from .resume import ResumeSource, read_resume
from .step import AMP_MODES, LOSSES
from .trainer import Trainer


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
    g.add_argument("--impl", choices=IMPLS, help=IMPL_HELP)
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
