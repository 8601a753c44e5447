"""Convert a checkpoint of rosinality/style-based-gan-pytorch into this project's checkpoint file.

    python -m stylegan_cuda.convert train_step-7.model converted.pt
    python -m stylegan_cuda.convert 100000.model converted.pt      # EMA-generator-only files too

The output holds each model found (``generator``, ``discriminator``, ``g_running``) with its configuration; read it
with :func:`stylegan_cuda.checkpoint.load`. The optimizer states are not converted.
"""

from __future__ import annotations

import argparse
import sys

from . import checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stylegan_cuda.convert", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="the seed's train_step-N.model or NNNNNN.model")
    parser.add_argument("output", help="where to write this project's checkpoint")
    args = parser.parse_args(argv)
    try:
        models = checkpoint.load_rosinality(args.input, impl="reference")
    except checkpoint.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        checkpoint.save(args.output, **models)
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as a RuntimeError
        print(f"error: cannot write {args.output}: {error}", file=sys.stderr)
        return 2
    for name, model in models.items():
        print(f"{name}: {'absent' if model is None else model.config}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
