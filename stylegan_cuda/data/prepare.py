"""Turn a folder of images into a multi-resolution LMDB database.

Every image under the folder (recursively, in sorted order) is converted to
RGB, its centred square is resized to each requested size and stored encoded
under the seed's keys (see ``layout``). Unreadable files are skipped and
reported. The database is built beside the output path and moved into place
only when complete, so an interrupted run never leaves a database that claims
images it does not hold. SIGINT and SIGTERM (``main``) stop the build and
delete the unfinished copy; the final move into place is not interrupted.
"""

import argparse
import contextlib
import functools
import io
import multiprocessing
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

import lmdb
import numpy as np
from PIL import Image, ImageOps

from ..stop_signals import handling_stop_signals
from .dataset import close_shared_environment
from .layout import LENGTH_KEY, METADATA_KEY, encode_metadata, image_key
from .progress import ProgressBar

IMAGE_SUFFIXES = frozenset(
    ".bmp .dib .gif .jfif .jpe .jpeg .jpg .pbm .pgm .png .pnm .ppm .qoi .tga .tif .tiff .webp".split()
)
RESAMPLE_FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
}
IMAGE_FORMATS = ("jpeg", "png")
SMALLEST_DEFAULT_SIZE = 8
DEFAULT_MAX_SIZE = 1024
LARGEST_SIZE = 1024  # the models' largest resolution
# Modes Pillow clips (instead of scaling) when converting to 8 bits, with the
# value that maps to white: 16-bit integers (Pillow opens some as "I") and
# floats in [0, 1]. Values outside [0, white] make the image skipped.
HIGH_DEPTH_WHITE = {"I": 65535, "I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "F": 1.0}
LMDB_FILES = frozenset({"data.mdb", "lock.mdb"})
INITIAL_MAP_SIZE = 64 * 1024**2
COMMIT_BYTES = 64 * 1024**2


class PrepareError(Exception):
    """Bad input or output path; the message names the problem."""


class StopSignal(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the build (see ``raising_stop_signals``)."""

    def __init__(self, signum):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


def raise_stop_signal(signum, frame):
    """Signal handler: raise ``StopSignal``."""
    raise StopSignal(signum)


def raising_stop_signals():
    """While entered in the main thread, SIGINT and SIGTERM raise ``StopSignal``."""
    return handling_stop_signals(raise_stop_signal)


@contextlib.contextmanager
def deferred_stop_signals():
    """While entered, SIGINT and SIGTERM are only recorded, in the list it yields."""
    received = []
    with handling_stop_signals(lambda signum, frame: received.append(signum)):
        yield received


def default_sizes(max_size=DEFAULT_MAX_SIZE):
    """Powers of two from 8 up to ``max_size`` (which must be one of them)."""
    if not SMALLEST_DEFAULT_SIZE <= max_size <= LARGEST_SIZE or max_size & (max_size - 1):
        raise PrepareError(
            f"the largest size must be a power of two from {SMALLEST_DEFAULT_SIZE} to {LARGEST_SIZE}, got {max_size}"
        )
    return tuple(2**power for power in range(3, max_size.bit_length()))


def find_image_files(root):
    """Files under ``root`` split into (images, others) by suffix, both sorted.

    The order is that of the paths relative to ``root``, so it does not depend
    on the filesystem or on where ``root`` lies.
    """
    root = Path(root)
    files = sorted(
        (path for path in root.rglob("*") if path.is_file()),
        key=lambda path: path.relative_to(root).as_posix(),
    )
    images = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES]
    others = [path for path in files if path.suffix.lower() not in IMAGE_SUFFIXES]
    return images, others


def load_rgb(path):
    """Decode ``path`` fully into an 8-bit RGB image.

    EXIF orientation is applied, 16-bit and float images are scaled (not
    clipped) to 8 bits and transparent pixels are composited onto white.
    Raises whatever Pillow raises for an unreadable or truncated file, and
    ``ValueError`` for a 32-bit or float image out of range.
    """
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    if image.mode in HIGH_DEPTH_WHITE:
        image = scale_to_eight_bits(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def scale_to_eight_bits(image):
    """A one-channel high-depth ``image`` as 8-bit "L": 0 stays black, its mode's white becomes 255."""
    white = HIGH_DEPTH_WHITE[image.mode]
    pixels = np.asarray(image, dtype=np.float64)
    if not np.isfinite(pixels).all():
        raise ValueError(f"mode {image.mode} image with NaN or infinite pixel values")
    if pixels.min() < 0 or pixels.max() > white:
        raise ValueError(
            f"mode {image.mode} image with pixel values in [{pixels.min():g}, {pixels.max():g}], "
            f"outside [0, {white:g}]; convert it to 8 or 16 bits"
        )
    return Image.fromarray(np.round(pixels * (255 / white)).astype(np.uint8))


def resize_center_square(image, size, resample):
    """The centred square of ``image`` (side: its shorter side) resized to ``size``."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize(
        (size, size), resample, box=(left, top, left + side, top + side), reducing_gap=3.0
    )


def encode_image(image, image_format):
    """``image`` as JPEG (quality 100, no chroma subsampling) or PNG bytes."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=100, subsampling=0)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class EncodeOptions:
    """How each image is stored: sizes, resampling filter name and format."""

    sizes: tuple
    resample: str
    image_format: str


class EncodedImage(NamedTuple):
    """One source file encoded at every size, or the reason it was skipped."""

    encoded: Optional[tuple]
    shorter_side: int
    error: Optional[str]


def encode_all_sizes(path, options):
    """Encode ``path`` at every size of ``options``; never raises for a bad file."""
    try:
        if os.path.getsize(path) == 0:
            return EncodedImage(None, 0, "empty file (0 bytes)")
        image = load_rgb(path)
        resample = RESAMPLE_FILTERS[options.resample]
        encoded = tuple(
            encode_image(resize_center_square(image, size, resample), options.image_format)
            for size in options.sizes
        )
    # Pillow raises many types (OSError, SyntaxError, ValueError, struct.error,
    # DecompressionBombError...) for bad files; one bad file must not stop the run.
    except Exception as error:  # noqa: BLE001
        return EncodedImage(None, 0, f"{type(error).__name__}: {error}")
    return EncodedImage(encoded, min(image.size), None)


def _leave_stop_signals_to_parent():
    """Worker initializer: Ctrl-C is handled by the parent, which stops the workers; SIGTERM ends quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def encode_in_order(paths, options, n_worker):
    """Yield ``(path, encode_all_sizes(path))`` in order, computed on ``n_worker`` processes.

    Closing the generator early stops the worker processes; a worker that dies
    (e.g. killed by the out-of-memory killer) raises ``PrepareError``.
    """
    encode = functools.partial(encode_all_sizes, options=options)
    if n_worker == 1:
        yield from zip(paths, map(encode, paths))
        return
    executor = ProcessPoolExecutor(
        n_worker, mp_context=multiprocessing.get_context(), initializer=_leave_stop_signals_to_parent
    )
    try:
        results = executor.map(encode, paths, chunksize=4)
        for path in paths:
            try:
                result = next(results)
            except BrokenProcessPool:
                raise PrepareError(
                    f"a worker process died (killed by the system, perhaps out of memory) while "
                    f"decoding {path} or one of the images after it; nothing was kept"
                ) from None
            yield path, result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


class LmdbWriter:
    """Writes key/value pairs in batched transactions; the map doubles when full."""

    def __init__(self, path, initial_map_size=INITIAL_MAP_SIZE, commit_bytes=COMMIT_BYTES):
        self.env = lmdb.open(str(path), map_size=initial_map_size, meminit=False)
        self.commit_bytes = commit_bytes
        self.pending = []
        self.pending_bytes = 0

    def put(self, key, value):
        """Queue one pair; commit once ``commit_bytes`` are queued."""
        self.pending.append((key, value))
        self.pending_bytes += len(value)
        if self.pending_bytes >= self.commit_bytes:
            self.commit()

    def commit(self):
        """Write the queued pairs in one transaction, growing the map as needed."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self.pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(2 * self.env.info()["map_size"])
        self.pending.clear()
        self.pending_bytes = 0

    def close(self):
        """Close the database without committing queued pairs."""
        self.env.close()


@dataclass
class PrepareReport:
    """What a build wrote and what it skipped."""

    out_path: Path
    sizes: tuple
    count: int = 0
    skipped: list = field(default_factory=list)  # (path, reason)
    ignored: list = field(default_factory=list)  # paths without an image suffix
    upscaled: int = 0
    seconds: float = 0.0

    def summary(self):
        """A few lines for the user: counts, rate, skipped and ignored files."""
        rate = self.count / self.seconds if self.seconds > 0 else 0.0
        sizes = ",".join(map(str, self.sizes))
        lines = [
            f"wrote {self.count} images at sizes {sizes} to {self.out_path} "
            f"in {self.seconds:.1f} s ({rate:.1f} img/s)",
            f"skipped {len(self.skipped)} unreadable file(s)",
        ]
        if self.ignored:
            examples = ", ".join(path.name for path in self.ignored[:3])
            lines.append(f"ignored {len(self.ignored)} file(s) without an image suffix (e.g. {examples})")
        if self.upscaled:
            lines.append(
                f"{self.upscaled} image(s) had a shorter side below {max(self.sizes)} px and were upscaled"
            )
        return "\n".join(lines)


def is_lmdb_directory(path):
    """Whether ``path`` is a directory holding only LMDB files."""
    return path.is_dir() and {child.name for child in path.iterdir()} <= LMDB_FILES and (
        path / "data.mdb"
    ).exists()


def check_output_path(out_path, overwrite):
    """Refuse to replace anything but an LMDB database, and that only with ``overwrite``."""
    if not out_path.exists():
        return
    if not overwrite:
        raise PrepareError(f"{out_path} already exists; pass --overwrite to replace it")
    if not is_lmdb_directory(out_path):
        raise PrepareError(f"{out_path} exists and is not an LMDB database; not replacing it")


def remove_unfinished_build(partial_path, stream):
    """Delete the leftovers of an earlier interrupted build at ``partial_path``."""
    if not partial_path.exists():
        return
    if not is_lmdb_directory(partial_path):
        raise PrepareError(f"{partial_path} exists and is not an unfinished build; remove it first")
    stream.write(f"removing the unfinished build of an earlier run: {partial_path}\n")
    shutil.rmtree(partial_path)


def replaced_path(out_path):
    """Where :func:`move_into_place` keeps the old database until the new one is in place."""
    return out_path.with_name(out_path.name + ".replaced")


def move_into_place(partial_path, out_path):
    """Replace ``out_path`` by the finished build: the old database is renamed aside first and deleted last, so that
    a kill at any moment leaves a whole database at ``out_path`` or aside (:func:`restore_replaced` puts it back)."""
    old_path = replaced_path(out_path)
    if out_path.exists():
        os.replace(out_path, old_path)
    os.replace(partial_path, out_path)
    close_shared_environment(out_path)  # this process's next reader opens the new database, not the old files
    shutil.rmtree(old_path, ignore_errors=True)


def restore_replaced(out_path, stream):
    """Finish what a killed :func:`move_into_place` left: put the old database back if no new one took its place,
    otherwise delete it."""
    old_path = replaced_path(out_path)
    if not old_path.exists():
        return
    if not is_lmdb_directory(old_path):
        raise PrepareError(f"{old_path} exists and is not a database this tool set aside; remove it first")
    if out_path.exists():
        stream.write(f"removing the old database that an earlier run replaced: {old_path}\n")
        shutil.rmtree(old_path)
    else:
        stream.write(f"an earlier run was killed while it replaced {out_path}: putting the old database back\n")
        os.replace(old_path, out_path)


def validate_options(sizes, n_worker, resample, image_format):
    """Raise ``PrepareError`` for an option out of range."""
    if not sizes or any(not 1 <= size <= LARGEST_SIZE for size in sizes):
        raise PrepareError(
            f"sizes must be positive integers of at most {LARGEST_SIZE} (the models' largest "
            f"resolution), got {list(sizes)}"
        )
    if n_worker < 1:
        raise PrepareError(f"--n_worker must be at least 1, got {n_worker}")
    if resample not in RESAMPLE_FILTERS:
        raise PrepareError(f"unknown resample filter {resample!r}; choose from {sorted(RESAMPLE_FILTERS)}")
    if image_format not in IMAGE_FORMATS:
        raise PrepareError(f"unknown image format {image_format!r}; choose from {list(IMAGE_FORMATS)}")


def prepare_database(
    dataset_path,
    out_path,
    sizes=None,
    n_worker=1,
    resample="lanczos",
    image_format="jpeg",
    overwrite=False,
    stream=None,
    initial_map_size=INITIAL_MAP_SIZE,
):
    """Build the LMDB database ``out_path`` from the images under ``dataset_path``.

    ``sizes`` defaults to 8, 16, ..., 1024. Progress and one line per skipped
    file go to ``stream`` (stderr by default). Returns a ``PrepareReport``;
    raises ``PrepareError`` for bad input or when no image could be read.
    An interruption deletes the unfinished build; one that arrives while the
    finished database replaces ``out_path`` waits for it and is only reported.
    """
    sizes = tuple(sorted(set(default_sizes() if sizes is None else sizes)))
    validate_options(sizes, n_worker, resample, image_format)
    stream = sys.stderr if stream is None else stream
    dataset_path, out_path = Path(dataset_path), Path(out_path)
    if not dataset_path.is_dir():
        raise PrepareError(f"dataset path {dataset_path} is not a directory")
    image_paths, ignored = find_image_files(dataset_path)
    if not image_paths:
        raise PrepareError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {dataset_path}")
    restore_replaced(out_path, stream)
    check_output_path(out_path, overwrite)
    partial_path = out_path.with_name(out_path.name + ".partial")
    remove_unfinished_build(partial_path, stream)

    report = PrepareReport(out_path=out_path, sizes=sizes, ignored=ignored)
    options = EncodeOptions(sizes, resample, image_format)
    start = time.perf_counter()
    try:
        partial_path.parent.mkdir(parents=True, exist_ok=True)
        writer = LmdbWriter(partial_path, initial_map_size)
    except (OSError, lmdb.Error) as error:
        raise PrepareError(f"cannot create the database {out_path}: {error}") from None
    results = encode_in_order(image_paths, options, n_worker)
    try:
        progress = ProgressBar(len(image_paths), "prepare", stream)
        for path, result in results:
            if result.error is None:
                for size, encoded in zip(sizes, result.encoded):
                    writer.put(image_key(size, report.count), encoded)
                report.count += 1
                if result.shorter_side < sizes[-1]:
                    report.upscaled += 1
            else:
                report.skipped.append((path, result.error))
                progress.write(f"skipped {path.relative_to(dataset_path)}: {result.error}")
            progress.update()
        progress.close()
        if report.count == 0:
            raise PrepareError(
                f"none of the {len(image_paths)} image files under {dataset_path} could be read"
            )
        # The count goes in the last transaction, after every image it claims.
        writer.put(METADATA_KEY, encode_metadata(sizes, report.count, image_format, resample))
        writer.put(LENGTH_KEY, str(report.count).encode("utf-8"))
        writer.commit()
    except BaseException as error:
        with deferred_stop_signals() as received:
            results.close()
            writer.close()
            shutil.rmtree(partial_path, ignore_errors=True)
        if received and not isinstance(error, KeyboardInterrupt):  # e.g. a SIGTERM that also killed a worker
            raise StopSignal(received[0]) from error
        if isinstance(error, (OSError, lmdb.Error)):  # e.g. the disk is full
            raise PrepareError(f"writing {out_path} failed, nothing was kept: {error}") from error
        raise
    writer.close()
    check_output_path(out_path, overwrite)
    with deferred_stop_signals() as received:
        move_into_place(partial_path, out_path)
    for signum in received:
        stream.write(f"{signal.Signals(signum).name} arrived while {out_path} was moved into place; it is complete\n")
    report.seconds = time.perf_counter() - start
    return report


def parse_sizes(text):
    """``"8,16,32"`` -> ``(8, 16, 32)``, for argparse."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return sizes


def build_parser():
    """The command line of ``prepare_data.py``."""
    parser = argparse.ArgumentParser(
        prog="prepare_data.py",
        description="Resize every image under DATASET_PATH (recursively, sorted by path) to "
        "several square resolutions and store them in an LMDB database readable by "
        "stylegan_cuda.data.MultiResolutionDataset and by rosinality's style-based-gan-pytorch.",
    )
    parser.add_argument("dataset_path", metavar="DATASET_PATH", help="folder of images; subfolders are read too")
    parser.add_argument("--out", required=True, metavar="LMDB_PATH", help="database directory to create")
    size_group = parser.add_mutually_exclusive_group()
    size_group.add_argument(
        "--sizes", type=parse_sizes, help="comma-separated sizes in pixels, e.g. 8,16,32 "
        "(default: powers of two from 8 to --max_size)"
    )
    size_group.add_argument(
        "--max_size", type=int, default=DEFAULT_MAX_SIZE,
        help=f"largest size of the default list (a power of two; default {DEFAULT_MAX_SIZE})",
    )
    parser.add_argument(
        "--n_worker", type=int, default=min(8, os.cpu_count() or 1),
        help="number of processes decoding and resizing (default: min(8, CPU count)); "
        "the result does not depend on it",
    )
    parser.add_argument(
        "--resample", choices=sorted(RESAMPLE_FILTERS), default="lanczos",
        help="resampling filter (default: lanczos, as the seed)",
    )
    parser.add_argument(
        "--format", dest="image_format", choices=IMAGE_FORMATS, default="jpeg",
        help="storage format: jpeg (quality 100, as the seed; default) or png (lossless, larger)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing database at LMDB_PATH")
    return parser


def main(argv=None):
    """Entry point of ``prepare_data.py``; returns the exit status."""
    args = build_parser().parse_args(argv)
    report = None
    try:
        with raising_stop_signals():
            report = prepare_database(
                args.dataset_path,
                args.out,
                sizes=args.sizes or default_sizes(args.max_size),
                n_worker=args.n_worker,
                resample=args.resample,
                image_format=args.image_format,
                overwrite=args.overwrite,
            )
            print(report.summary())
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StopSignal as stop:
        outcome = f"nothing was written to {args.out}" if report is None else f"{args.out} is complete"
        print(f"\ninterrupted by {stop.name}; {outcome}", file=sys.stderr)
        return 128 + stop.signum
    return 0
