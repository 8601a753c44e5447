"""Benchmark of the data pipeline on CPU.

Measures images per second for ``prepare_database`` (sizes 8..256, JPEG) with
1 and 2 workers, and for a DataLoader over ``MultiResolutionDataset`` at 64
and 256 px; each case counts its best of several runs, as the machine may be
shared. Sources: the shipped demo photographs upscaled to a 512 px shorter
side (JPEG quality 95), several copies each. Run from the repository root:
``python -m benchmarks.data``; writes ``benchmarks/results/data_cpu_<N>cores.json`` (a run with other settings:
``data_<settings>_cpu_<N>cores.json``, e.g. ``data_c2_r1_cpu_2cores.json``).
"""

import argparse
import io
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import PIL
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.harness import format_table, machine_info, write_results
from stylegan_cuda.data import MultiResolutionDataset, prepare_database
from stylegan_cuda.data.demo import write_demo_images

PREPARE_SIZES = (8, 16, 32, 64, 128, 256)
SOURCE_SHORTER_SIDE = 512


def write_sources(folder, copies):
    """The demo photographs upscaled to a 512 px shorter side, ``copies`` times each."""
    demo_paths = write_demo_images(folder / "demo")
    sources = []
    for demo_path in demo_paths:
        with Image.open(demo_path) as image:
            rgb = image.convert("RGB")
        scale = SOURCE_SHORTER_SIDE / min(rgb.size)
        large = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
        for copy in range(copies):
            path = folder / "sources" / f"copy{copy}" / f"{demo_path.stem}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            large.save(path, quality=95)
            sources.append(path)
    return sources


def time_prepare(source_folder, out_path, n_worker, repeats):
    """Fewest seconds over ``repeats`` builds with ``n_worker`` processes."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        prepare_database(
            source_folder, out_path, sizes=PREPARE_SIZES, n_worker=n_worker,
            overwrite=True, stream=io.StringIO(),
        )
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def time_loader(database, resolution, num_workers, batch_size, min_seconds, repeats):
    """Best images per second of a shuffled DataLoader over ``repeats`` windows.

    One warm-up epoch, then each window runs whole epochs for ``min_seconds``.
    """
    dataset = MultiResolutionDataset(database, resolution=resolution)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    for _ in loader:
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        images = 0
        while time.perf_counter() - start < min_seconds:
            for batch in loader:
                images += batch.shape[0]
        rates.append(images / (time.perf_counter() - start))
    return max(rates)


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or the platform's machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=24, help="copies of each of the 15 demo photos")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case; the best counts")
    parser.add_argument("--seconds", type=float, default=1.0, help="least time of one DataLoader run")
    args = parser.parse_args(argv)
    for name in ("copies", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.seconds < math.inf:
        parser.error(f"--seconds must be a finite number > 0, got {args.seconds}")
    settings = [f"{name[0]}{getattr(args, name):g}" for name in ("copies", "repeats", "seconds")
                if getattr(args, name) != parser.get_default(name)]
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sources = write_sources(scratch, args.copies)
        database = scratch / "bench.lmdb"
        prepare_rows = []
        for n_worker in (1, 2):
            seconds = time_prepare(scratch / "sources", database, n_worker, args.repeats)
            prepare_rows.append(
                {"n_worker": n_worker, "images": len(sources), "seconds": round(seconds, 3),
                 "images_per_s": round(len(sources) / seconds, 1)}
            )
        loader_rows = []
        for resolution in (64, 256):
            for num_workers in (0, 2):
                rate = time_loader(database, resolution, num_workers, batch_size=32, min_seconds=args.seconds,
                                   repeats=args.repeats)
                loader_rows.append(
                    {"resolution": resolution, "num_workers": num_workers, "batch_size": 32,
                     "images_per_s": round(rate, 1)}
                )

    machine = {
        **machine_info("cpu"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "pillow": PIL.__version__,
        # Other work on the machine slows runs down (hence best of --repeats): the 1-minute
        # load average around the benchmark.
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    source = (
        f"{len(sources)} JPEG files, shorter side {SOURCE_SHORTER_SIDE} px "
        f"(the 15 demo photos upscaled, {args.copies} copies)"
    )
    results = {
        "repeats": args.repeats,
        "prepare": {"sizes": list(PREPARE_SIZES), "source": source, "format": "jpeg", "rows": prepare_rows},
        "dataloader": {"batch_size": 32, "shuffle": True, "transform": "default", "rows": loader_rows},
    }
    results_path = write_results("data", settings, "cpu", results, machine=machine)

    print(f"Best of {args.repeats} runs each.\nprepare_database: {source}; sizes 8..256, JPEG quality 100")
    print(format_table(prepare_rows, [("n_worker", "workers", "d"), ("images", "images", "d"),
                                      ("seconds", "seconds", ".2f"), ("images_per_s", "images/s", ".1f")]))
    print("\nDataLoader over MultiResolutionDataset: batch 32, shuffled, default transform")
    print(format_table(loader_rows, [("resolution", "resolution", "d"), ("num_workers", "num_workers", "d"),
                                     ("images_per_s", "images/s", ".1f")]))
    print(
        f"\n{machine['cpu_model']}, {machine['cpu_count']} CPUs, {machine['date']}, load average "
        f"{machine['load_average_before']} before / {machine['load_average_after']} after; written to {results_path}"
    )


if __name__ == "__main__":
    main()
