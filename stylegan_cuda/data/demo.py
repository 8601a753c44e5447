"""The built-in demo set: real images shipped inside the package.

``python -m stylegan_cuda.data.demo OUT_DIR`` writes them to a folder that
then goes through ``prepare_data.py`` like any user's folder. Their sources
and licences (public domain / CC0) are listed in ``demo_images/README.md``.
"""

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from .prepare import IMAGE_SUFFIXES


def shipped_demo_images():
    """Resources of the shipped demo images, sorted by name."""
    folder = resources.files(__package__) / "demo_images"
    images = [entry for entry in folder.iterdir() if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(images, key=lambda entry: entry.name)


class DemoError(ValueError):
    """The demo images cannot be written where asked."""


def write_demo_images(out_dir):
    """Copy the demo images into ``out_dir`` (created if needed); return their paths.

    A file of the same name that is not that image is never replaced; each image is written whole or not at all."""
    out_dir = Path(out_dir)
    images = [(image, out_dir / image.name) for image in shipped_demo_images()]
    for image, target in images:
        if target.is_dir() or (target.exists() and target.read_bytes() != image.read_bytes()):
            raise DemoError(f"{target} exists and is not the demo image of that name: not replacing it; choose "
                            "another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for image, target in images:
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(image.read_bytes())
        os.replace(partial, target)
    return [target for _, target in images]


def main(argv=None):
    """Write the demo images and say how to prepare them."""
    parser = argparse.ArgumentParser(
        prog="python -m stylegan_cuda.data.demo",
        description="Write the demo images shipped with stylegan_cuda (public domain / CC0 "
        "photographs from scikit-image's sample data) into OUT_DIR.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the images into")
    args = parser.parse_args(argv)
    try:
        paths = write_demo_images(args.out_dir)
    except (DemoError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} demo images to {args.out_dir}")
    print(f"next: python prepare_data.py --out demo.lmdb --sizes 8,16,32 {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
