"""Tests of the data pipeline: prepare_data.py, MultiResolutionDataset, demo set."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from torch.utils.data import DataLoader

from stylegan_cuda.data import MultiResolutionDataset, PrepareError, prepare_database
from stylegan_cuda.data.demo import write_demo_images
from stylegan_cuda.data.prepare import LmdbWriter, build_parser, load_rgb, main

sys.path.insert(0, str(Path(__file__).parent))
from data_helpers import (  # noqa: E402
    noise_bytes,
    read_like_the_seed,
    write_bad_files,
    write_good_images,
    write_seed_layout_database,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZES = (4, 8)


def all_items(path):
    """Every key/value pair of an LMDB database, as a dict."""
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = dict(txn.cursor())
    env.close()
    return items


def decode(encoded):
    return np.asarray(Image.open(io.BytesIO(encoded)))


@pytest.fixture
def messy_folder(tmp_path):
    """Good images of every mode, bad files and a non-image file, nested."""
    root = tmp_path / "images"
    root.mkdir()
    expected = write_good_images(root)
    bad = write_bad_files(root)
    (root / "nested" / "notes.txt").write_text("not an image\n")
    return root, expected, bad


@pytest.fixture
def messy_database(messy_folder, tmp_path):
    root, expected, bad = messy_folder
    report = prepare_database(root, tmp_path / "db", sizes=SIZES, stream=io.StringIO())
    return tmp_path / "db", expected, bad, report


def test_database_holds_exactly_the_good_images_in_order(messy_folder, messy_database):
    root = messy_folder[0]
    path, expected, bad, report = messy_database
    items = all_items(path)
    assert items[b"length"] == str(len(expected)).encode()
    metadata = json.loads(items[b"metadata"])
    assert metadata["sizes"] == list(SIZES) and metadata["length"] == len(expected)
    image_keys = {key for key in items if key not in (b"length", b"metadata")}
    assert image_keys == {f"{size}-{index:05d}".encode() for size in SIZES for index in range(len(expected))}
    for index, (name, rgb) in enumerate(expected):
        for size in SIZES:
            pixels = decode(items[f"{size}-{index:05d}".encode()])
            assert pixels.shape == (size, size, 3), name
            assert np.abs(pixels.astype(int) - rgb).max() <= 2, name
    assert report.count == len(expected)
    assert [path.relative_to(root).as_posix() for path, _ in report.skipped] == bad
    assert [path.name for path in report.ignored] == ["notes.txt"]


def test_result_does_not_depend_on_worker_count(messy_folder, tmp_path):
    root, _, _ = messy_folder
    prepare_database(root, tmp_path / "one", sizes=SIZES, n_worker=1, stream=io.StringIO())
    prepare_database(root, tmp_path / "two", sizes=SIZES, n_worker=2, stream=io.StringIO())
    assert all_items(tmp_path / "one") == all_items(tmp_path / "two")


def test_center_square_is_kept(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    wide = np.zeros((4, 12, 3), np.uint8)
    wide[:, :, 2] = 255
    wide[:, 4:8] = (255, 0, 0)
    Image.fromarray(wide).save(root / "wide.png")
    Image.fromarray(wide.transpose(1, 0, 2).copy()).save(root / "tall.png")
    prepare_database(root, tmp_path / "db", sizes=(2, 4), image_format="png", stream=io.StringIO())
    items = all_items(tmp_path / "db")
    for key in (b"4-00000", b"4-00001"):
        assert (decode(items[key]) == (255, 0, 0)).all()
    assert decode(items[b"2-00000"]).shape == (2, 2, 3)


def test_jpeg_is_stored_at_quality_100_without_chroma_subsampling(tmp_path):
    """The seed's JPEG quality 100 (every quantization step 1) and full-resolution colour (4:4:4)."""
    root = tmp_path / "images"
    root.mkdir()
    (root / "noise.png").write_bytes(noise_bytes("PNG", size=(16, 16)))
    prepare_database(root, tmp_path / "db", sizes=(8,), stream=io.StringIO())
    image = Image.open(io.BytesIO(all_items(tmp_path / "db")[b"8-00000"]))
    assert image.format == "JPEG"
    assert all(max(table) == 1 for table in image.quantization.values())
    assert JpegImagePlugin.get_sampling(image) == 0


def test_resample_filter_is_applied_and_recorded(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "noise.png")
    pixels = {}
    for resample in ("lanczos", "box"):
        out = tmp_path / resample
        prepare_database(root, out, sizes=(8,), resample=resample, image_format="png", stream=io.StringIO())
        items = all_items(out)
        assert json.loads(items[b"metadata"])["resample"] == resample
        pixels[resample] = decode(items[b"8-00000"])
    box_mean = noise.reshape(8, 4, 8, 4, 3).mean(axis=(1, 3))
    assert np.abs(pixels["box"] - box_mean).max() <= 1
    assert not np.array_equal(pixels["lanczos"], pixels["box"])


def test_high_depth_images_are_scaled_with_rounding_up_to_their_white(tmp_path):
    """16-bit and 32-bit integers in [0, 65535] and floats in [0, 1] scale to 8 bits (rounded): their white is
    accepted and becomes 255; a value below 0 skips the image like one above the white."""
    cases = [("I;16", 1000, 4), ("I;16", 65535, 255), ("I", 65535, 255), ("F", 0.25, 64), ("F", 1.0, 255)]
    for index, (mode, value, gray) in enumerate(cases):
        path = tmp_path / f"{index}.{'png' if mode == 'I;16' else 'tiff'}"
        Image.new(mode, (4, 4), value).save(path)
        assert (np.asarray(load_rgb(path)) == gray).all(), (mode, value)
    Image.new("F", (4, 4), -0.25).save(tmp_path / "negative.tiff")
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        load_rgb(tmp_path / "negative.tiff")


def test_transparent_palette_entry_goes_on_white(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 120, 230] + [0, 0, 0] * 254)
    image.save(tmp_path / "transparent.png", transparency=1)
    assert (np.asarray(load_rgb(tmp_path / "transparent.png")) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    """A landscape JPEG whose EXIF says "rotate 90 degrees clockwise" (orientation 6) is read as a portrait."""
    pixels = np.zeros((16, 24, 3), np.uint8)
    pixels[:, :12] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 12:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", quality=100, exif=exif)
    rgb = np.asarray(load_rgb(tmp_path / "rotated.jpg")).astype(int)
    assert rgb.shape == (24, 16, 3)
    assert np.abs(rgb[2] - (255, 0, 0)).max() <= 8 and np.abs(rgb[-3] - (0, 0, 255)).max() <= 8  # red on top


def test_lanczos_is_pillows_lanczos(tmp_path):
    """The default filter is the seed's LANCZOS, the others Pillow's filter of their name."""
    root = tmp_path / "images"
    root.mkdir()
    noise = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "noise.png")
    for name, resample in (("lanczos", Image.Resampling.LANCZOS), ("bicubic", Image.Resampling.BICUBIC)):
        out = tmp_path / name
        kwargs = {} if name == "lanczos" else {"resample": name}
        prepare_database(root, out, sizes=(8,), image_format="png", stream=io.StringIO(), **kwargs)
        expected = np.asarray(Image.fromarray(noise).resize((8, 8), resample))
        assert np.array_equal(decode(all_items(out)[b"8-00000"]), expected), name


def test_upscaled_images_are_counted_by_their_shorter_side(tmp_path, capsys):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (40, 16), (1, 2, 3)).save(root / "a_wide.png")  # shorter side 16 < 32: upscaled
    Image.new("RGB", (40, 40), (1, 2, 3)).save(root / "b_large.png")
    assert main(["--out", str(tmp_path / "db"), "--sizes", "4,32", "--n_worker", "1", str(root)]) == 0
    assert "1 image(s) had a shorter side below 32 px and were upscaled" in capsys.readouterr().out


def test_sizes_are_sorted_and_deduplicated_and_max_size_gives_powers_of_two_from_8(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(root / "a.png")
    report = prepare_database(root, tmp_path / "db", sizes=(8, 4, 8), stream=io.StringIO())
    assert report.sizes == (4, 8)
    assert json.loads(all_items(tmp_path / "db")[b"metadata"]) == {
        "format_version": 1, "image_format": "jpeg", "length": 1, "resample": "lanczos", "sizes": [4, 8]}
    assert main(["--out", str(tmp_path / "max16"), "--max_size", "16", str(root)]) == 0
    assert MultiResolutionDataset(tmp_path / "max16").resolutions == [8, 16]


def test_cli_reports_each_bad_file_and_the_count(messy_folder, tmp_path, capsys):
    root, expected, bad = messy_folder
    status = main(["--out", str(tmp_path / "db"), "--sizes", "4,8", "--n_worker", "2", str(root)])
    captured = capsys.readouterr()
    assert status == 0
    for name in bad:
        assert f"skipped {name}:" in captured.err
    assert f"wrote {len(expected)} images at sizes 4,8" in captured.out
    assert f"skipped {len(bad)} unreadable file(s)" in captured.out
    assert "ignored 1 file(s) without an image suffix (e.g. notes.txt)" in captured.out


def test_cli_help_documents_every_option():
    text = build_parser().format_help()
    for option in ("--out", "--sizes", "--max_size", "--n_worker", "--resample", "--format", "--overwrite"):
        assert option in text


def test_existing_output_is_not_overwritten_without_flag(messy_folder, tmp_path, capsys):
    root, expected, _ = messy_folder
    out = tmp_path / "db"
    assert main(["--out", str(out), "--sizes", "4", str(root)]) == 0
    assert main(["--out", str(out), "--sizes", "8", str(root)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["--out", str(out), "--sizes", "8", "--overwrite", str(root)]) == 0
    assert MultiResolutionDataset(out, resolution=8).resolutions == [8]


def test_overwrite_refuses_a_folder_that_is_not_a_database(messy_folder, tmp_path):
    root, _, _ = messy_folder
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.jpg").write_bytes(b"precious")
    with pytest.raises(PrepareError, match="is not an LMDB database"):
        prepare_database(root, tmp_path / "photos", sizes=SIZES, overwrite=True, stream=io.StringIO())
    assert (tmp_path / "photos" / "keep.jpg").read_bytes() == b"precious"


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="no image files"):
        prepare_database(tmp_path / "empty", tmp_path / "db", sizes=SIZES, stream=io.StringIO())
    with pytest.raises(PrepareError, match="not a directory"):
        prepare_database(tmp_path / "missing", tmp_path / "db", sizes=SIZES, stream=io.StringIO())
    assert not (tmp_path / "db").exists()


def test_folder_without_readable_image_is_an_error_and_writes_nothing(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    bad = write_bad_files(root)
    with pytest.raises(PrepareError, match=f"none of the {len(bad)} image files"):
        prepare_database(root, tmp_path / "db", sizes=SIZES, n_worker=2, stream=io.StringIO())
    assert sorted(os.listdir(tmp_path)) == ["images"]


def test_invalid_options_are_errors(messy_folder, tmp_path):
    root, _, _ = messy_folder
    for options, message in [
        ({"sizes": (0, 8)}, "positive"),
        ({"sizes": (8, 2048)}, "at most 1024"),
        ({"n_worker": 0}, "n_worker"),
        ({"resample": "nearest"}, "unknown resample"),
        ({"image_format": "gif"}, "unknown image format"),
    ]:
        with pytest.raises(PrepareError, match=message):
            prepare_database(root, tmp_path / "db", **{"sizes": SIZES, **options})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--out", "x", "--sizes", "8,abc", "y"])
    assert main(["--out", str(tmp_path / "db"), "--max_size", "100", str(root)]) == 2
    assert main(["--out", str(tmp_path / "db"), "--max_size", "2048", str(root)]) == 2
    assert not (tmp_path / "db").exists()


def test_unwritable_output_is_an_error_and_keeps_nothing(messy_folder, tmp_path, monkeypatch):
    root, _, _ = messy_folder
    (tmp_path / "a_file").write_text("")
    with pytest.raises(PrepareError, match="cannot create the database"):
        prepare_database(root, tmp_path / "a_file" / "db", sizes=SIZES, stream=io.StringIO())

    def disk_full(self, key, value):
        raise lmdb.DiskError("mdb_put: No space left on device")

    monkeypatch.setattr(LmdbWriter, "put", disk_full)
    with pytest.raises(PrepareError, match="writing .*db failed, nothing was kept: mdb_put: No space left"):
        prepare_database(root, tmp_path / "db", sizes=SIZES, stream=io.StringIO())
    assert not (tmp_path / "db").exists() and not (tmp_path / "db.partial").exists()


def test_map_grows_from_a_tiny_initial_size(tmp_path):
    paths = write_demo_images(tmp_path / "demo")
    report = prepare_database(
        tmp_path / "demo", tmp_path / "db", sizes=(8, 16, 64), initial_map_size=32 * 1024,
        stream=io.StringIO(),
    )
    assert report.count == len(paths)
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    assert 32 * 1024 < env.info()["map_size"] < 1024**3
    env.close()


def test_demo_images_never_replace_other_files(tmp_path, capsys):
    from stylegan_cuda.data.demo import main as demo_main

    first = write_demo_images(tmp_path / "demo")
    assert write_demo_images(tmp_path / "demo") == first  # the same images again: nothing to refuse
    first[0].write_bytes(b"the user's own picture")
    assert demo_main([str(tmp_path / "demo")]) == 2
    assert f"{first[0]} exists and is not the demo image of that name" in capsys.readouterr().err
    assert first[0].read_bytes() == b"the user's own picture"
    (tmp_path / "a_file").write_text("")
    assert demo_main([str(tmp_path / "a_file")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_demo_images_are_real_shipped_images(tmp_path):
    paths = write_demo_images(tmp_path / "demo")
    assert len(paths) >= 15
    assert sum(path.stat().st_size for path in paths) < 3 * 1024**2
    for path in paths:
        assert min(load_rgb(path).size) >= 100
    report = prepare_database(tmp_path / "demo", tmp_path / "db", sizes=(8, 16), stream=io.StringIO())
    assert report.count == len(paths) and not report.skipped


# prepare_data.py whose encoding takes 0.1 s per image and kills its process on the image named $DIE_ON.
SLOW_BUILD = textwrap.dedent(
    """
    import os, signal, sys, time
    import stylegan_cuda.data.prepare as prepare
    encode = prepare.encode_all_sizes
    def slow_encode(path, options):
        time.sleep(0.1)
        if path.name == os.environ.get("DIE_ON"):
            os.kill(os.getpid(), signal.SIGKILL)
        return encode(path, options)
    prepare.encode_all_sizes = slow_encode
    sys.exit(prepare.main(sys.argv[1:]))
    """
)


def write_numbered_images(root, count=60):
    """``count`` small PNGs ``000.png``, ``001.png``, ... under ``root``."""
    root.mkdir()
    for index in range(count):
        Image.new("RGB", (12, 12), (index * 4, 0, 0)).save(root / f"{index:03d}.png")


def slow_build_command(out, root, n_worker):
    """The command line of a ``SLOW_BUILD`` of ``root`` into ``out``."""
    options = ["--out", str(out), "--sizes", "4,8", "--n_worker", str(n_worker), str(root)]
    return [sys.executable, "-c", SLOW_BUILD, *options]


@pytest.mark.parametrize(
    "stop_signal, n_worker",
    [(signal.SIGKILL, 1), (signal.SIGINT, 1), (signal.SIGINT, 2), (signal.SIGTERM, 1), (signal.SIGTERM, 2)],
)
def test_interrupted_build_leaves_no_database_claiming_images(tmp_path, stop_signal, n_worker):
    root = tmp_path / "images"
    write_numbered_images(root)
    out, partial = tmp_path / "db", tmp_path / "db.partial"
    process = subprocess.Popen(
        slow_build_command(out, root, n_worker), cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert process.poll() is None, "the build finished before it could be interrupted"
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=30)
    assert not out.exists()
    if stop_signal != signal.SIGKILL:
        assert process.returncode == 128 + stop_signal, stderr
        assert f"interrupted by {stop_signal.name}; nothing was written" in stderr
        assert "Traceback" not in stderr and not partial.exists()
    else:
        assert partial.exists()
        with pytest.raises(ValueError, match="no 'length' key"):
            MultiResolutionDataset(partial, resolution=4)
    report = prepare_database(root, out, sizes=(4, 8), stream=io.StringIO())
    assert report.count == 60 and not partial.exists()
    assert len(MultiResolutionDataset(out, resolution=8)) == 60


def test_dead_worker_ends_the_build_with_an_error(tmp_path):
    root = tmp_path / "images"
    write_numbered_images(root, count=20)
    out = tmp_path / "db"
    result = subprocess.run(
        slow_build_command(out, root, n_worker=2), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DIE_ON": "005.png"},
    )
    assert result.returncode == 2
    assert "error: a worker process died" in result.stderr and "nothing was kept" in result.stderr
    assert not out.exists() and not (tmp_path / "db.partial").exists()


def test_signal_while_the_database_is_replaced_waits_for_it(messy_folder, tmp_path, monkeypatch, capsys):
    root, expected, _ = messy_folder
    out = tmp_path / "db"
    assert main(["--out", str(out), "--sizes", "4", str(root)]) == 0
    remove_tree = shutil.rmtree

    def interrupted_rmtree(path, *args, **kwargs):
        if Path(path) == tmp_path / "db.replaced":  # the old database, set aside
            os.kill(os.getpid(), signal.SIGINT)
        remove_tree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted_rmtree)
    assert main(["--out", str(out), "--sizes", "4,8", "--overwrite", str(root)]) == 0
    assert "SIGINT arrived while" in capsys.readouterr().err
    assert MultiResolutionDataset(out, resolution=8).resolutions == [4, 8]
    assert not (tmp_path / "db.partial").exists() and not (tmp_path / "db.replaced").exists()


# prepare_data.py killed (SIGKILL) just as it moves the finished build into place.
KILLED_IN_THE_SWAP = textwrap.dedent(
    """
    import os, signal, sys
    import stylegan_cuda.data.prepare as prepare
    replace = os.replace
    def killed_replace(src, dst):
        if str(src).endswith(".partial"):
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
    os.replace = killed_replace
    sys.exit(prepare.main(sys.argv[1:]))
    """
)


def test_a_kill_while_the_database_is_replaced_loses_neither(messy_folder, tmp_path, capsys):
    root, expected, _ = messy_folder
    out = tmp_path / "db"
    assert main(["--out", str(out), "--sizes", "4", str(root)]) == 0
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_THE_SWAP, "--out", str(out), "--sizes", "4,8",
                             "--overwrite", str(root)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert main(["--out", str(out), "--sizes", "4,8", str(root)]) == 2  # the old database is back: not replaced
    err = capsys.readouterr().err
    assert "putting the old database back" in err and "already exists; pass --overwrite" in err
    assert MultiResolutionDataset(out, resolution=4).resolutions == [4]
    assert main(["--out", str(out), "--sizes", "4,8", "--overwrite", str(root)]) == 0
    assert MultiResolutionDataset(out, resolution=8).resolutions == [4, 8]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("db")) == ["db"]


def test_dataset_errors_name_the_problem(messy_database, tmp_path):
    path, _, _, _ = messy_database
    with pytest.raises(FileNotFoundError, match="no database at"):
        MultiResolutionDataset(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="is not a prepared database"):
        MultiResolutionDataset(tmp_path / "plain")
    env = lmdb.open(str(tmp_path / "unfinished"))
    with env.begin(write=True) as txn:
        txn.put(b"8-00000", b"x")
    env.close()
    with pytest.raises(ValueError, match="no 'length' key"):
        MultiResolutionDataset(tmp_path / "unfinished")
    with pytest.raises(ValueError, match="no images at resolution 16; it holds 4, 8"):
        MultiResolutionDataset(path, resolution=16)
    dataset = MultiResolutionDataset(path, resolution=4)
    with pytest.raises(ValueError, match="it holds 4, 8"):
        dataset.resolution = 32
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    with pytest.raises(IndexError):
        dataset[-1]
    env = lmdb.open(str(tmp_path / "no_images"))
    with env.begin(write=True) as txn:
        txn.put(b"8-00000", b"x")
        txn.put(b"length", b"0")
    env.close()
    with pytest.raises(ValueError, match="holds no images"):
        MultiResolutionDataset(tmp_path / "no_images")


def test_default_transform_is_the_seeds(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    halves = np.zeros((8, 8, 3), np.uint8)
    halves[:, :4] = (255, 0, 0)
    halves[:, 4:] = (0, 64, 255)
    Image.fromarray(halves).save(root / "halves.png")
    prepare_database(root, tmp_path / "db", sizes=(8,), image_format="png", stream=io.StringIO())
    dataset = MultiResolutionDataset(tmp_path / "db", resolution=8)
    expected = (torch.from_numpy(halves).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.manual_seed(0)
    samples = [dataset[0] for _ in range(32)]
    assert all(sample.dtype == torch.float32 and sample.shape == (3, 8, 8) for sample in samples)
    flipped = [torch.equal(sample, expected.flip(-1)) for sample in samples]
    unflipped = [torch.equal(sample, expected) for sample in samples]
    assert all(a != b for a, b in zip(flipped, unflipped))
    assert 4 <= sum(flipped) <= 28
    assert expected.min() == -1 and expected.max() == 1


@pytest.mark.parametrize("context, workers", [("fork", 2), ("spawn", 1)])
def test_dataloader_workers_open_their_own_handle(messy_database, context, workers):
    path, expected, _, _ = messy_database
    dataset = MultiResolutionDataset(path, resolution=8)
    dataset[0]  # the parent opens its handle first; workers must not reuse it
    loader = DataLoader(dataset, batch_size=4, num_workers=workers, multiprocessing_context=context)
    batches = list(loader)
    assert sum(batch.shape[0] for batch in batches) == len(expected)
    assert all(batch.shape[1:] == (3, 8, 8) for batch in batches)


def test_two_datasets_on_one_database_in_one_process(messy_database):
    path, _, _, _ = messy_database
    small = MultiResolutionDataset(path, resolution=4)
    small[0]
    large = MultiResolutionDataset(path, resolution=8)
    assert small[1].shape == (3, 4, 4) and large[1].shape == (3, 8, 8)


def test_database_with_the_seeds_layout_reads_back(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    write_seed_layout_database(
        tmp_path / "seed",
        {size: [Image.new("RGB", (size, size), rgb) for rgb in colours] for size in (8, 16)},
    )
    dataset = MultiResolutionDataset(tmp_path / "seed", transform=np.asarray, resolution=16)
    assert len(dataset) == 3 and dataset.resolutions == [8, 16] and dataset.metadata is None
    for index, rgb in enumerate(colours):
        pixels = dataset[index]
        assert pixels.shape == (16, 16, 3)
        assert np.abs(pixels.astype(int) - rgb).max() <= 2


def test_database_made_here_reads_in_the_seeds_dataset(messy_database):
    path, expected, _, _ = messy_database
    for index, (_, rgb) in enumerate(expected):
        length, image = read_like_the_seed(path, 8, index)
        assert length == len(expected) and image.size == (8, 8)
        assert np.abs(np.asarray(image.convert("RGB")).astype(int) - rgb).max() <= 2
