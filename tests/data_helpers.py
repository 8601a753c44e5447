"""Image files of every kind for the data pipeline tests."""

import io
import struct
import zlib

import lmdb
import numpy as np
from PIL import Image


def png_chunk(tag, data):
    """One PNG chunk: length, tag, data, CRC."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def write_rgb16_png(path, size, rgb16):
    """A solid 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    width, height = size
    row = b"\x00" + struct.pack(">HHH", *rgb16) * width
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(row * height))
        + png_chunk(b"IEND", b"")
    )


def solid(mode, size, value):
    """A Pillow image of one colour."""
    return Image.new(mode, size, value)


def palette_image(size, rgb):
    """A palette ('P') image whose every pixel is palette entry 1 = ``rgb``."""
    image = Image.new("P", size, 1)
    image.putpalette([0, 0, 0, *rgb] + [0, 0, 0] * 254)
    return image


def noise_bytes(image_format, size=(64, 64), seed=0):
    """An encoded noise image, large enough that truncating it loses pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def write_good_images(root):
    """Write one image of each mode and format under ``root``.

    Returns ``[(relative path, expected RGB)]`` in the order the database must
    hold them (sorted by relative path).
    """
    landscape, portrait = (24, 16), (16, 24)
    files = [
        ("a_rgb.jpg", solid("RGB", landscape, (200, 30, 40)), {"quality": 95}, (200, 30, 40)),
        ("b_gray.png", solid("L", portrait, 90), {}, (90, 90, 90)),
        ("c_palette.png", palette_image(landscape, (10, 120, 230)), {}, (10, 120, 230)),
        # Fully transparent black: composited onto white, not left black.
        ("d_rgba.png", solid("RGBA", landscape, (0, 0, 0, 0)), {}, (255, 255, 255)),
        ("e_cmyk.jpg", solid("CMYK", portrait, (0, 255, 255, 0)), {"quality": 95}, (255, 0, 0)),
        # 16-bit gray 128 * 257: scaled to 128, not clipped to 255.
        ("f_gray16.png", solid("I;16", landscape, 128 * 257), {}, (128, 128, 128)),
        # Float in [0, 1] and 32-bit integer in the 16-bit range: scaled, not clipped.
        ("f_gray_float.tiff", solid("F", portrait, 0.25), {}, (64, 64, 64)),
        ("f_gray_int32.tiff", solid("I", landscape, 200 * 257), {}, (200, 200, 200)),
        ("h_lossless.webp", solid("RGB", portrait, (20, 200, 60)), {"lossless": True}, (20, 200, 60)),
        ("i_bitmap.bmp", solid("RGB", landscape, (250, 250, 0)), {}, (250, 250, 0)),
        ("k_bilevel.tiff", solid("1", portrait, 1), {}, (255, 255, 255)),
        ("nested/deeper/j_gray_alpha.png", solid("LA", landscape, (50, 255)), {}, (50, 50, 50)),
    ]
    expected = []
    for name, image, save_options, rgb in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **save_options)
        expected.append((name, rgb))
    write_rgb16_png(root / "g_rgb16.png", landscape, (65535, 0, 128 * 257))
    expected.append(("g_rgb16.png", (255, 0, 128)))
    return sorted(expected)


def write_bad_files(root):
    """Write files that must be skipped; return their relative paths."""
    (root / "bad_truncated.jpg").write_bytes(noise_bytes("JPEG")[:2000])
    corrupt = bytearray(noise_bytes("PNG"))
    corrupt[100:] = b"\x00" * (len(corrupt) - 100)
    (root / "bad_corrupt.png").write_bytes(bytes(corrupt))
    (root / "bad_empty.png").write_bytes(b"")
    solid("F", (16, 16), 255.0).save(root / "bad_float_above_one.tiff")
    solid("I", (16, 16), 70000).save(root / "bad_int32_above_16_bits.tiff")
    (root / "nested" / "bad_text.jpg").parent.mkdir(exist_ok=True)
    (root / "nested" / "bad_text.jpg").write_text("this is not a JPEG\n")
    return [
        "bad_corrupt.png",
        "bad_empty.png",
        "bad_float_above_one.tiff",
        "bad_int32_above_16_bits.tiff",
        "bad_truncated.jpg",
        "nested/bad_text.jpg",
    ]


def write_seed_layout_database(path, images_by_size):
    """A database exactly as the seed's prepare_data.py lays it out (no metadata).

    ``images_by_size`` maps a size to the list of PIL images at that size.
    """
    env = lmdb.open(str(path), map_size=64 * 1024**2)
    with env.begin(write=True) as txn:
        for size, images in images_by_size.items():
            for index, image in enumerate(images):
                buffer = io.BytesIO()
                image.save(buffer, format="jpeg", quality=100)
                txn.put(f"{size}-{str(index).zfill(5)}".encode("utf-8"), buffer.getvalue())
        txn.put("length".encode("utf-8"), str(len(images)).encode("utf-8"))
    env.close()


def read_like_the_seed(path, resolution, index):
    """Read one image the way the seed's MultiResolutionDataset does."""
    env = lmdb.open(str(path), max_readers=32, readonly=True, lock=False, readahead=False, meminit=False)
    with env.begin(write=False) as txn:
        length = int(txn.get("length".encode("utf-8")).decode("utf-8"))
        encoded = txn.get(f"{resolution}-{str(index).zfill(5)}".encode("utf-8"))
    env.close()
    return length, Image.open(io.BytesIO(encoded))
