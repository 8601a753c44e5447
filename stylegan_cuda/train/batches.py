"""The training data: resumable, rank-split batches of left-right flipped or unflipped images
(:class:`ResumableBatches`), from a database checked to hold every resolution of the schedule (:func:`open_dataset`)."""

from __future__ import annotations

import math

import lmdb
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..data.dataset import MultiResolutionDataset, read_database_info
from .config import TrainError
from .schedule import Schedule


def _image_to_tensor(image) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    return pixels.float().div_(127.5).sub_(1)


class FlippableImages(Dataset):
    """Images of one resolution addressed by ``2 * index + flip``: the flip is chosen by the sampler, not drawn in
    the loader, so the data stream does not depend on loader workers and can be resumed exactly."""

    def __init__(self, dataset: MultiResolutionDataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key: int) -> torch.Tensor:
        image = self.dataset[key // 2]
        return image.flip(-1) if key % 2 else image


class ResumableBatches(Sampler):
    """An endless stream of batches of ``2 * index + flip`` keys for one rank, starting at sample ``position``.

    Epoch ``e`` is a permutation of the dataset with a random left-right flip per image, drawn from a generator seeded
    by ``(seed, resolution, e)`` and padded (by its first keys) to a multiple of ``world_size``; rank ``r`` takes
    every ``world_size``-th key from the ``r``-th (as ``DistributedSampler``). Batches run across epoch ends, so any
    dataset size fits any batch size.
    """

    def __init__(self, length: int, batch: int, seed: int, resolution: int, rank: int = 0, world_size: int = 1,
                 position: int = 0):
        self.length, self.batch, self.seed, self.resolution = length, batch, seed, resolution
        self.rank, self.world_size, self.position = rank, world_size, position
        self.per_rank = math.ceil(length / world_size)

    @staticmethod
    def rank_position(length: int, position: int, world_size: int, new_world_size: int) -> int:
        """A rank's ``position`` in a run of ``world_size`` ranks as one in a run of ``new_world_size``: the same
        epoch, as much of it done (exactly where ``new_world_size`` divides the keys the ranks took of it)."""
        epoch, offset = divmod(position, math.ceil(length / world_size))
        return epoch * math.ceil(length / new_world_size) + offset * world_size // new_world_size

    def epoch_keys(self, epoch: int) -> torch.Tensor:
        seed = ((self.seed * 1_000_003 + self.resolution) * 65_537 + epoch) % 2**63  # torch takes 64 bits
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(self.length, generator=generator)
        flips = torch.randint(0, 2, (self.length,), generator=generator)
        keys = order * 2 + flips
        total = self.per_rank * self.world_size
        if total > self.length:
            keys = keys.repeat(math.ceil(total / self.length))[:total]
        return keys[self.rank::self.world_size]

    def __iter__(self):
        epoch, offset = divmod(self.position, self.per_rank)
        keys = self.epoch_keys(epoch)
        while True:
            batch = []
            while len(batch) < self.batch:
                if offset == self.per_rank:
                    epoch, offset = epoch + 1, 0
                    keys = self.epoch_keys(epoch)
                take = min(self.batch - len(batch), self.per_rank - offset)
                batch.extend(keys[offset:offset + take].tolist())
                offset += take
            yield batch


def open_dataset(path, schedule: Schedule) -> MultiResolutionDataset:
    """The dataset, checked to hold every resolution the schedule trains at."""
    if path is None:
        raise TrainError("no dataset given: train.py DATASET_LMDB (a database made by prepare_data.py)")
    try:
        _, resolutions, _ = read_database_info(path)
        missing = [r for r in schedule.resolutions if r not in resolutions]
        if missing:
            raise TrainError(
                f"dataset {path} holds {', '.join(map(str, resolutions))} px but training from {schedule.init_size} "
                f"to {schedule.max_size} px needs {', '.join(map(str, missing))} px too: prepare it with "
                f"prepare_data.py --sizes {','.join(map(str, schedule.resolutions))}"
            )
        return MultiResolutionDataset(path, transform=_image_to_tensor, resolution=schedule.init_size)
    except (FileNotFoundError, ValueError, OSError, lmdb.Error) as error:
        if isinstance(error, TrainError):
            raise
        raise TrainError(f"dataset: {error}") from None
