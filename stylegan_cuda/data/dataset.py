"""Read the images of a multi-resolution LMDB database for training."""

import io
import os
from pathlib import Path

import lmdb
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .layout import LENGTH_KEY, METADATA_KEY, PROBED_RESOLUTIONS, decode_metadata, image_key


def to_training_tensor(image):
    """The seed's training transform without torchvision.

    A PIL RGB image becomes a float32 tensor (3, H, W) with values in [-1, 1],
    mirrored left-right with probability 0.5 (drawn from torch's generator, so
    DataLoader workers draw differently).
    """
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    if torch.rand(()) < 0.5:
        pixels = pixels.flip(-1)
    return pixels.float().div_(255).sub_(0.5).div_(0.5)


# py-lmdb allows one handle per database and process, and a handle must not
# be used across fork: the handles of this process, by real path.
_environments = {}
_environments_pid = None


def shared_environment(path):
    """This process's read-only LMDB handle on ``path``, opened on first use.

    Handles inherited through fork are closed and reopened in the child.
    """
    global _environments_pid
    if _environments_pid != os.getpid():
        for inherited in _environments.values():
            inherited.close()
        _environments.clear()
        _environments_pid = os.getpid()
    key = os.path.realpath(path)
    if key not in _environments:
        _environments[key] = lmdb.open(
            key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=126
        )
    return _environments[key]


def close_shared_environment(path):
    """Close this process's handle on ``path`` if it has one."""
    environment = _environments.pop(os.path.realpath(path), None)
    if environment is not None:
        environment.close()


class DatasetError(ValueError):
    """A damaged database record; the text names the database, the key and the problem.

    Raised in a DataLoader worker, it reaches the main process as a ``DatasetError`` whose text is the worker's
    traceback: :attr:`problem` is the original text either way.
    """

    @property
    def problem(self):
        """The text the error was raised with, without a DataLoader worker's traceback around it."""
        return str(self).rstrip().rpartition(f"{type(self).__name__}: ")[2]


def read_database_info(path):
    """``(length, resolutions, metadata)`` of the database at ``path``.

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a
    path that is not a complete prepared database.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no database at {path}; create one with prepare_data.py")
    if not (path / "data.mdb").is_file():
        raise ValueError(f"{path} is not a prepared database (no data.mdb in it); create one with prepare_data.py")
    with shared_environment(path).begin() as txn:
        raw_length = txn.get(LENGTH_KEY)
        metadata = decode_metadata(txn.get(METADATA_KEY))
        if metadata is None:
            resolutions = [size for size in PROBED_RESOLUTIONS if txn.get(image_key(size, 0)) is not None]
        else:
            resolutions = list(metadata["sizes"])
    if raw_length is None:
        close_shared_environment(path)
        raise ValueError(
            f"{path} is not a prepared database: it has no 'length' key (an unfinished build?)"
        )
    length = int(raw_length.decode("utf-8"))
    if length < 1 or not resolutions:
        close_shared_environment(path)
        raise ValueError(f"{path} holds no images (length {length}, resolutions {resolutions})")
    return length, resolutions, metadata


class MultiResolutionDataset(Dataset):
    """Images of one resolution from a database written by ``prepare_data.py``.

    Reads the seed's layout too. ``resolution`` may be changed between epochs
    (progressive growing); it must be one of ``resolutions``. Each process
    opens the database on first use, so DataLoader workers (fork or spawn)
    and distributed ranks each get their own handle.
    """

    def __init__(self, path, transform=None, resolution=8):
        self.path = Path(path)
        self.transform = to_training_tensor if transform is None else transform
        self.length, self.resolutions, self.metadata = read_database_info(self.path)
        self.resolution = resolution

    @property
    def resolution(self):
        """Side in pixels of the images returned."""
        return self._resolution

    @resolution.setter
    def resolution(self, value):
        if value not in self.resolutions:
            held = ", ".join(map(str, self.resolutions))
            raise ValueError(f"{self.path} holds no images at resolution {value}; it holds {held}")
        self._resolution = value

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        key = image_key(self.resolution, index)
        with shared_environment(self.path).begin() as txn:
            encoded = txn.get(key)
        where = f"database {self.path}, key {key.decode()!r}"
        if encoded is None:
            raise DatasetError(f"{where}: no such record, though the database's length says it holds "
                               f"{self.length} images (a damaged or edited database)")
        try:
            image = Image.open(io.BytesIO(encoded)).convert("RGB")
        # Pillow raises many types (OSError, SyntaxError, ValueError, struct.error...) for damaged bytes.
        except Exception as error:  # noqa: BLE001
            raise DatasetError(f"{where}: not a readable image ({type(error).__name__}: {error})") from None
        if image.size != (self.resolution, self.resolution):
            raise DatasetError(f"{where}: the image is {image.size[0]}x{image.size[1]} px, not "
                               f"{self.resolution}x{self.resolution}")
        return self.transform(image)
