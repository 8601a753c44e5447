"""Timing and reporting shared by the benchmarks: median of timed runs after warm-up, CUDA events on the GPU."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, warmup: int = 3, repeat: int = 20, min_seconds: float = 0.2) -> float:
    """Median milliseconds of ``fn()``; repeats at least ``repeat`` times and at least ``min_seconds`` in all."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start_all < min_seconds and len(times) < 10 * repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def interleaved_ms(fns: dict[str, Callable[[], object]], device: str, repeat: int,
                   min_seconds: float = 0.0) -> dict[str, float]:
    """Median milliseconds of each function, timed in turns (one call of each per round, at least ``repeat`` rounds
    and ``min_seconds`` in all) so that a changing machine load hits all of them alike. Each round starts one
    function further on, so that each follows each of the others (and the caches and heap they leave) alike."""
    for fn in fns.values():
        fn()
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeat or (time.perf_counter() - start < min_seconds and rounds < 10 * repeat):
        for k in range(len(names)):
            name = names[(rounds + k) % len(names)]
            times[name].append(time_ms(fns[name], device, warmup=0, repeat=1, min_seconds=0))
        rounds += 1
    return {name: statistics.median(t) for name, t in times.items()}


def tensor_copy_gbs(src: torch.Tensor, device: str) -> float:
    """Bandwidth of copying ``src`` into a tensor like it, counting the bytes read and the bytes written."""
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, repeat=20)
    return 2 * src.numel() * src.element_size() / ms / 1e6


def copy_bandwidth_gbs(device: str, nbytes: int = 256 * 2**20) -> float:
    """Measured device copy bandwidth (a 256 MiB float32 tensor), counting the bytes read and the bytes written."""
    return tensor_copy_gbs(torch.randn(nbytes // 4, device=device), device)


def machine_info(device: str) -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": device,
    }
    malloc = {name: value for name, value in os.environ.items() if name.startswith("MALLOC_")}
    if malloc:  # glibc malloc settings change CPU timings (page faults of fresh outputs)
        info["malloc_env"] = malloc
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def device_tag(device: str) -> str:
    if device == "cuda":
        return "cuda_" + torch.cuda.get_device_name().replace(" ", "_").replace("/", "_")
    return f"cpu_{os.cpu_count()}cores"


def write_results(benchmark: str, settings: list[str], device: str, payload: dict,
                  machine: dict | None = None) -> Path:
    """Write ``<benchmark>[_<settings>]_<device tag>.json`` under ``RESULTS_DIR`` (whole or not at all), with the
    machine's facts (and ``machine``'s) beside ``payload``. ``settings``: how the run differs from the benchmark's
    defaults, so that such a run writes a file of its own and never replaces a default run's results."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{'_'.join([benchmark, *settings, device_tag(device)])}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": {**machine_info(device), **(machine or {})}, **payload}, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec) triples."""
    header = [h for _, h, _ in columns]
    body = [[format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(header, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


@dataclasses.dataclass
class OpCase:
    """One op at one shape: how to make its inputs, the three implementations, and the bytes it must move."""

    op: str
    shape: tuple
    make_inputs: Callable[[str, torch.dtype], tuple]  # the tensors that take gradients come first
    extension: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]  # the seed's eager way
    grad_inputs: int  # how many leading inputs take gradients in the forward+backward timing
    # Fewest bytes through memory: forward (inputs read + output written) and forward+backward.
    traffic: Callable[[tuple, torch.Tensor], tuple[int, int]]
