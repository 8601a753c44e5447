"""Key layout of a multi-resolution LMDB database, shared by writer and reader.

The layout is the one of rosinality/style-based-gan-pytorch: one encoded image
per key ``f"{size}-{index:05d}"`` and the image count under ``length``. This
project adds a JSON ``metadata`` key; databases without it still read.
"""

import json

LENGTH_KEY = b"length"
METADATA_KEY = b"metadata"
FORMAT_VERSION = 1

# Resolutions probed in databases that carry no metadata (those of the seed).
PROBED_RESOLUTIONS = tuple(2**power for power in range(14))


def image_key(size, index):
    """LMDB key of image ``index`` at resolution ``size``."""
    return f"{size}-{index:05d}".encode("utf-8")


def encode_metadata(sizes, length, image_format, resample):
    """JSON bytes describing a database built by this package."""
    return json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "sizes": list(sizes),
            "length": length,
            "image_format": image_format,
            "resample": resample,
        },
        sort_keys=True,
    ).encode("utf-8")


def decode_metadata(raw):
    """Parse the ``metadata`` value; ``None`` stays ``None`` (a seed database)."""
    return None if raw is None else json.loads(raw.decode("utf-8"))
