"""``python -m stylegan_cuda.build``: build (or find in the cache) the kernels now and print what was built."""

import argparse
import sys

from .ops.build import ExtensionBuildError, load_extension


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stylegan_cuda.build", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    args = parser.parse_args(argv)
    try:
        info = load_extension(verbose=args.verbose)
    except ExtensionBuildError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"stylegan_cuda kernels: {info.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
