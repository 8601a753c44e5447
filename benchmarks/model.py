"""Model benchmark: generator forward and one full training iteration, extension vs reference vs the seed's own
code, with peak memory.

    python -m benchmarks.model [--device cpu|cuda] [--resolutions 8,16,32] [--batch N] [--max-channels C] [--quick]

The training iteration is :func:`stylegan_cuda.train.train_step`: a D step with the R1 penalty, a G step, Adam
and the EMA update, with mixing regularization, at ``alpha = 0.5`` (the fade-in runs both paths). Defaults:
CPU at 8, 16, 32 px with ``max_channels=64``, batch 8, in float32 and under bfloat16 autocast; CUDA at 8 to 256 px
at the seed's full width, batch 16, plus the extension under bfloat16 autocast with channels_last. "seed fp32" is
the seed's model.py as rewritten in ``tests/seed_reference.py`` (plain PyTorch, its parameter names and function)
with the seed's optimizers (plain Adam), in the same training step: what a user of the seed runs. The variants are
timed in turns (median of ``--repeat`` rounds) so that a changing machine load hits all alike. Peak memory is CUDA's
``max_memory_allocated`` (not measured on the CPU). Writes ``benchmarks/results/model_<device>.json``; a run with
other resolutions, batch or width than the defaults, or ``--quick``, writes ``model_<settings>_<device>.json``
(e.g. ``model_r8_b2_c16_quick_cpu_2cores.json``), so that it never replaces the results of a full run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import pathlib
import random

import torch

from stylegan_cuda.models import RESOLUTIONS, Discriminator, StyledGenerator, set_impl
from stylegan_cuda.train import make_optimizers, train_step
from stylegan_cuda.train.step import ADAM_BETAS, MAPPING_LR_SCALE

from .harness import format_table, interleaved_ms, synchronize, write_results

ALPHA = 0.5


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    impl: str
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False


SEED = Variant("seed fp32", "seed")
VARIANTS = {
    "cpu": [Variant("extension fp32", "extension"), Variant("reference fp32", "reference"), SEED,
            Variant("extension bf16", "extension", torch.bfloat16),
            Variant("reference bf16", "reference", torch.bfloat16)],
    "cuda": [Variant("extension fp32", "extension"), Variant("reference fp32", "reference"), SEED,
             Variant("extension bf16+cl", "extension", torch.bfloat16, True)],
}
DEFAULTS = {"cpu": dict(resolutions="8,16,32", batch=8, max_channels=64),
            "cuda": dict(resolutions="8,16,32,64,128,256", batch=16, max_channels=512)}


def _autocast(device: str, variant: Variant):
    if variant.autocast_dtype is None:
        return torch.autocast(device_type=device, enabled=False)
    return torch.autocast(device_type=device, dtype=variant.autocast_dtype)


def _peak_mb(device: str, fn) -> float | None:
    if device != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats()
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated() / 2**20


def _our_models(variant: Variant, models: tuple[StyledGenerator, Discriminator], device: str):
    """``(generator, discriminator, g_running, g_optimizer, d_optimizer)``: copies of ``models`` set up as
    ``variant``."""
    generator, discriminator = (copy.deepcopy(m) for m in models)
    g_running = copy.deepcopy(generator)
    for model in (generator, discriminator, g_running):
        model.to(device)
        if variant.channels_last:
            model.to(memory_format=torch.channels_last)
        set_impl(model, variant.impl)
    return (generator, discriminator, g_running, *make_optimizers(generator, discriminator))


def _seed_models(models: tuple[StyledGenerator, Discriminator], device: str):
    """The same, for the seed's models of the same configuration (``tests/seed_reference.py``, fresh weights: the time
    does not depend on them) and the seed's optimizers."""
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "seed_reference.py"
    spec = importlib.util.spec_from_file_location("seed_reference", path)
    seed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed)
    generator = seed.StyledGenerator(**{k: models[0].config[k] for k in
                                        ("code_dim", "n_mlp", "fused", "channel_base", "max_channels")}).to(device)
    generator.config = models[0].config  # what train_step reads (code_dim)
    discriminator = seed.Discriminator(**{k: models[1].config[k] for k in
                                          ("fused", "from_rgb_activate", "channel_base", "max_channels")}).to(device)
    lr = 1e-3
    g_optimizer = torch.optim.Adam(
        [{"params": generator.generator.parameters()},
         {"params": generator.style.parameters(), "lr": lr * MAPPING_LR_SCALE}], lr=lr, betas=ADAM_BETAS)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=ADAM_BETAS)
    return generator, discriminator, copy.deepcopy(generator), g_optimizer, d_optimizer


def _workloads(device: str, variant: Variant, resolution: int, batch: int,
               models: tuple[StyledGenerator, Discriminator]):
    """``(forward, iteration)`` closures of ``variant`` on its own copies of the models and optimizers."""
    step = RESOLUTIONS.index(resolution)
    if variant is SEED:
        generator, discriminator, g_running, g_optimizer, d_optimizer = _seed_models(models, device)
    else:
        generator, discriminator, g_running, g_optimizer, d_optimizer = _our_models(variant, models, device)
    z = torch.randn(batch, generator.config["code_dim"], device=device)
    real = torch.randn(batch, 3, resolution, resolution, device=device)
    if variant.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad(), _autocast(device, variant):
            generator(z, step=step, alpha=ALPHA)

    def iteration():
        with _autocast(device, variant):
            train_step(generator, discriminator, g_optimizer, d_optimizer, real, step, ALPHA, g_running=g_running)

    return forward, iteration


def bench_resolution(device: str, variants: list[Variant], resolution: int, batch: int, max_channels: int,
                     repeat: int, models: tuple[StyledGenerator, Discriminator]) -> list[dict]:
    random.seed(0)
    workloads = {v.name: _workloads(device, v, resolution, batch, models) for v in variants}
    forward_ms = interleaved_ms({name: w[0] for name, w in workloads.items()}, device, repeat)
    train_ms = interleaved_ms({name: w[1] for name, w in workloads.items()}, device, repeat)
    return [{"resolution": resolution, "variant": name, "batch": batch, "max_channels": max_channels,
             "forward_ms": forward_ms[name], "train_ms": train_ms[name],
             "forward_peak_mb": _peak_mb(device, forward), "train_peak_mb": _peak_mb(device, iteration)}
            for name, (forward, iteration) in workloads.items()]


def _add_speedups(rows: list[dict]) -> None:
    """Speedups over the reference in the same precision ("extension bf16" over "reference bf16"), or else over the
    fp32 reference ("extension bf16+cl" on CUDA); and over the seed's code."""
    reference = {(r["resolution"], r["variant"].split(" ", 1)[1]): r
                 for r in rows if r["variant"].startswith("reference")}
    seed = {r["resolution"]: r for r in rows if r["variant"] == SEED.name}
    for row in rows:
        precision = row["variant"].split(" ", 1)[1]
        for prefix, base in (("", reference.get((row["resolution"], precision),
                                                reference.get((row["resolution"], "fp32")))),
                             ("seed_", seed.get(row["resolution"]))):
            if base is not None:
                row[f"forward_{prefix}speedup"] = base["forward_ms"] / row["forward_ms"]
                row[f"train_{prefix}speedup"] = base["train_ms"] / row["train_ms"]


COLUMNS = [
    ("resolution", "px", "d"), ("variant", "variant", "s"), ("forward_ms", "G fwd ms", ".1f"),
    ("forward_speedup", "x ref", ".2f"), ("forward_seed_speedup", "x seed", ".2f"), ("train_ms", "train iter ms", ".1f"),
    ("train_speedup", "x ref", ".2f"), ("train_seed_speedup", "x seed", ".2f"),
    ("forward_peak_mb", "G fwd peak MiB", ".0f"), ("train_peak_mb", "train peak MiB", ".0f"),
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--resolutions", default=None, help="comma-separated, from 8 to 1024 (default per device)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--max-channels", type=int, default=None, help="channel_base stays the seed's 16384")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="the smallest resolution only, few repeats")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available (use --device cpu)")
    for name in ("batch", "max_channels", "repeat"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    defaults = DEFAULTS[args.device]
    try:
        resolutions = [int(r) for r in (args.resolutions or defaults["resolutions"]).split(",") if r.strip()]
    except ValueError:
        resolutions = []
    if not resolutions or any(r not in RESOLUTIONS[1:] for r in resolutions):
        parser.error(f"--resolutions: expected comma-separated sizes from {', '.join(map(str, RESOLUTIONS[1:]))}, "
                     f"got {args.resolutions!r}")
    resolutions = list(dict.fromkeys(resolutions))
    batch = args.batch or defaults["batch"]
    max_channels = args.max_channels or defaults["max_channels"]
    repeat = args.repeat or (3 if args.quick else 9)
    settings = []
    if resolutions != [int(r) for r in defaults["resolutions"].split(",")]:
        settings.append("r" + "-".join(map(str, resolutions)))
    if batch != defaults["batch"]:
        settings.append(f"b{batch}")
    if max_channels != defaults["max_channels"]:
        settings.append(f"c{max_channels}")
    if args.quick:  # the first resolution only
        settings.append("quick")
        resolutions = resolutions[:1]
    from stylegan_cuda.ops import load_extension

    print(f"kernels: {load_extension().describe()}")
    torch.manual_seed(0)
    models = (StyledGenerator(max_channels=max_channels, impl="reference"),
              Discriminator(max_channels=max_channels, impl="reference"))
    rows = []
    for resolution in resolutions:
        rows += bench_resolution(args.device, VARIANTS[args.device], resolution, batch, max_channels, repeat, models)
        for row in rows[-len(VARIANTS[args.device]):]:
            print(f"  {resolution} px {row['variant']}: forward {row['forward_ms']:.1f} ms, "
                  f"train iteration {row['train_ms']:.1f} ms", flush=True)
        _add_speedups(rows)
        # written as it goes: a run cut short keeps what it measured
        path = write_results("model", settings, args.device, {"alpha": ALPHA, "rows": rows})
    print(format_table(rows, COLUMNS))
    print(f"written {path}")


if __name__ == "__main__":
    main()
