"""Convert a checkpoint of rosinality/style-based-gan-pytorch into this project's checkpoint file.

    python -m stylegan_cuda.convert train_step-7.model converted.pt
    python -m stylegan_cuda.convert 100000.model converted.pt      # EMA-generator-only files too

The output holds each model found (``generator``, ``discriminator``, ``g_running``) with its configuration; read it
with :func:`stylegan_cuda.checkpoint.load`. The optimizer states are not converted. An existing output is replaced
only with ``--overwrite`` (never the input itself), and atomically: a failed write leaves the old file intact.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import checkpoint


class ConvertError(ValueError):
    """An output that must not be written, or whose write failed."""


def check_output(input_path, output_path, overwrite: bool) -> None:
    """Refuse to write over the input, and over any other existing file unless ``overwrite``."""
    if not os.path.lexists(output_path):
        return
    if os.path.exists(input_path) and os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise ConvertError(f"{output_path} is the input file: converting in place would lose the seed's file (its "
                           "optimizer states are not converted); give another output")
    if not overwrite:
        raise ConvertError(f"{output_path} already exists; pass --overwrite to replace it")


def convert(input_path, output_path, overwrite: bool = False) -> dict:
    """Write the models of the seed's file ``input_path`` to ``output_path`` (atomically); returns them."""
    check_output(input_path, output_path, overwrite)
    models = checkpoint.load_rosinality(input_path, impl="reference")
    try:
        checkpoint.save(output_path, **models)
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as a RuntimeError
        raise ConvertError(f"cannot write {output_path}: {error}") from None
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stylegan_cuda.convert", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="the seed's train_step-N.model or NNNNNN.model")
    parser.add_argument("output", help="where to write this project's checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file at OUTPUT")
    args = parser.parse_args(argv)
    try:
        models = convert(args.input, args.output, args.overwrite)
    except (ConvertError, checkpoint.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, model in models.items():
        print(f"{name}: {'absent' if model is None else model.config}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
