"""Data pipeline: image folder -> multi-resolution LMDB -> training tensors.

``prepare_database`` (CLI: ``prepare_data.py``) builds the database,
``MultiResolutionDataset`` reads it and ``stylegan_cuda.data.demo`` writes
the built-in demo set.
"""

from .dataset import MultiResolutionDataset, to_training_tensor
from .prepare import PrepareError, PrepareReport, default_sizes, prepare_database

__all__ = [
    "MultiResolutionDataset",
    "PrepareError",
    "PrepareReport",
    "default_sizes",
    "prepare_database",
    "to_training_tensor",
]
