"""Op benchmark: extension vs eager reference vs torch.compile(reference), forward and forward+backward.

    python -m benchmarks.ops [--device cpu|cuda|all] [--ops bias_act,upfirdn2d,adain] [--dtypes float32,bfloat16]
                             [--quick] [--profile]

Prints a table and writes ``benchmarks/results/ops_<device>.json`` (machine, torch version, threads); a run of some
ops (``--ops``) writes ``ops_<those ops>_<device>.json`` and a ``--quick`` one ``ops[...]_quick_<device>.json``, so
neither replaces the results of a full run.
Achieved bandwidth = the fewest bytes the op must move / time, against the device's measured copy bandwidth (a
256 MiB copy) and against a copy of the op's own input (same shape and dtype: what an elementwise op can reach at
that size).
``--profile`` also records where the extension's time goes (the kernels of one iteration, from torch.profiler).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

from .harness import (OpCase, copy_bandwidth_gbs, format_table, interleaved_ms, synchronize, tensor_copy_gbs,
                      write_results)

OPS = tuple(sorted(p.stem for p in (Path(__file__).parent / "cases").glob("[!_]*.py")))
# Time spent per case and pass, all three implementations together: longer on the CPU, whose timings vary more.
MIN_SECONDS = {"cpu": 3.0, "cuda": 0.6}
DTYPES = ("float32", "bfloat16", "float16", "float64")


def _cases(op: str, device: str, quick: bool) -> list[OpCase]:
    return importlib.import_module(f"benchmarks.cases.{op}").cases(device, quick)


def _runner(case: OpCase, fn, inputs, backward: bool):
    if not backward:
        return lambda: fn(*inputs)
    leaves = inputs[: case.grad_inputs]

    def step():
        out = fn(*inputs)
        torch.autograd.grad(out, leaves, grad_out[0])

    grad_out = [torch.randn_like(fn(*inputs))]
    return step


def kernel_times(step, device: str, iterations: int = 5) -> list[dict]:
    """Milliseconds per iteration of each kernel (CUDA) or op (CPU) that ``step`` runs, largest first."""
    from torch.profiler import ProfilerActivity, profile

    step()
    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        for _ in range(iterations):
            step()
        synchronize(device)
    totals: dict[str, float] = {}
    wanted = torch.autograd.DeviceType.CUDA if device == "cuda" else torch.autograd.DeviceType.CPU
    for event in prof.events():
        if event.device_type == wanted and (device == "cuda" or event.cpu_parent is None):  # CPU: top-level ops
            time_us = event.device_time if device == "cuda" else event.cpu_time
            totals[event.name] = totals.get(event.name, 0.0) + time_us / 1e3 / iterations
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return [{"name": name[:80], "ms": ms} for name, ms in ranked[:8]]


def bench_case(case: OpCase, device: str, dtype: torch.dtype, copy_gbs: float, repeat: int,
               profile: bool = False) -> list[dict]:
    rows = []
    for backward in (False, True):
        inputs = case.make_inputs(device, dtype)
        if not backward:  # the first pass: a copy of the input as it stands
            same_size_copy_gbs = tensor_copy_gbs(inputs[0], device)
        if backward:
            inputs = tuple(t.requires_grad_() if i < case.grad_inputs else t for i, t in enumerate(inputs))
        with torch.no_grad():
            out = case.extension(*inputs)
        fwd_bytes, fwdbwd_bytes = case.traffic(inputs, out)
        nbytes = fwdbwd_bytes if backward else fwd_bytes
        torch._dynamo.reset()  # a fresh compile per shape and pass, never the recompile limit's eager fallback
        fns = {"extension": case.extension, "reference": case.reference,
               "compiled": torch.compile(case.reference, dynamic=False)}
        with torch.enable_grad() if backward else torch.no_grad():
            runners = {impl: _runner(case, fn, inputs, backward) for impl, fn in fns.items()}
            times = interleaved_ms(runners, device, repeat, min_seconds=MIN_SECONDS[device])
            kernels = kernel_times(runners["extension"], device) if profile else None
        gbs = nbytes / times["extension"] / 1e6
        rows.append({
            "op": case.op, "shape": "x".join(map(str, case.shape)), "dtype": str(dtype).replace("torch.", ""),
            "pass": "fwd+bwd" if backward else "fwd",
            "extension_ms": times["extension"], "reference_ms": times["reference"], "compiled_ms": times["compiled"],
            "speedup_vs_reference": times["reference"] / times["extension"],
            "speedup_vs_compiled": times["compiled"] / times["extension"],
            "extension_gbs": gbs, "fraction_of_copy": gbs / copy_gbs,
            "fraction_of_same_size_copy": gbs / same_size_copy_gbs,
        })
        if kernels is not None:
            rows[-1]["extension_kernels"] = kernels
        del inputs, out
    return rows


COLUMNS = [
    ("op", "op", "s"), ("shape", "shape", "s"), ("dtype", "dtype", "s"), ("pass", "pass", "s"),
    ("extension_ms", "ext ms", ".3f"), ("reference_ms", "eager ms", ".3f"), ("compiled_ms", "compiled ms", ".3f"),
    ("speedup_vs_reference", "x eager", ".2f"), ("speedup_vs_compiled", "x compiled", ".2f"),
    ("extension_gbs", "ext GB/s", ".1f"), ("fraction_of_copy", "of copy", ".0%"),
    ("fraction_of_same_size_copy", "of same-size copy", ".0%"),
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all", choices=("cpu", "cuda", "all"))
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, from {', '.join(OPS)}")
    parser.add_argument("--dtypes", default=None, help="default: float32 on CPU, float32,bfloat16 on CUDA")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats (a smoke run)")
    parser.add_argument("--profile", action="store_true", help="also list the extension's kernels and their times")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available (use --device cpu or all)")
    ops = list(dict.fromkeys(op.strip() for op in args.ops.split(",") if op.strip()))
    if not ops:
        parser.error(f"--ops: name at least one op, from {', '.join(OPS)}")
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(OPS)}")
    dtype_names = None
    if args.dtypes is not None:
        dtype_names = list(dict.fromkeys(d.strip() for d in args.dtypes.split(",") if d.strip()))
        bad = [d for d in dtype_names if d not in DTYPES]
        if bad or not dtype_names:
            parser.error(f"--dtypes: unknown dtype(s) {', '.join(bad) or repr(args.dtypes)}; choose from "
                         f"{', '.join(DTYPES)}")
    from stylegan_cuda.ops import load_extension

    print(f"kernels: {load_extension().describe()}")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    for device in devices:
        dtypes = dtype_names or (["float32"] if device == "cpu" else ["float32", "bfloat16"])
        copy_gbs = copy_bandwidth_gbs(device)
        print(f"\n{device}: measured copy bandwidth {copy_gbs:.1f} GB/s (read + write)")
        rows = []
        settings = ([] if set(ops) == set(OPS) else list(ops)) + (["quick"] if args.quick else [])
        for op in ops:
            for case in _cases(op, device, args.quick):
                for dtype in dtypes:
                    new = bench_case(case, device, getattr(torch, dtype), copy_gbs, repeat=5 if args.quick else 20,
                                     profile=args.profile)
                    for row in new:
                        print(f"  {row['op']} {row['shape']} {row['dtype']} {row['pass']}: "
                              f"{row['extension_ms']:.3f} ms, x{row['speedup_vs_reference']:.2f} eager, "
                              f"x{row['speedup_vs_compiled']:.2f} compiled", flush=True)
                        for kernel in row.get("extension_kernels", []):
                            print(f"      {kernel['ms']:8.3f} ms  {kernel['name']}")
                    rows += new
                    # written as it goes: a run cut short keeps what it measured
                    path = write_results("ops", settings, device, {"copy_gbs": copy_gbs, "ops": ops, "rows": rows})
        print(format_table(rows, COLUMNS))
        print(f"written {path}")


if __name__ == "__main__":
    main()
