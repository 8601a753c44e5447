"""Image grids written with Pillow (no torchvision): images in ``[-1, 1]`` -> one PNG, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in ``[-1, 1]`` -> ``[N, H, W, 3]`` uint8 (clamped, rounded)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got {list(images.shape)}")
    pixels = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()


MAX_GRID_PIXELS = 2**28  # 16384 x 16384: a 768 MiB image in memory


def grid_size(count: int, ncol: int, height: int, width: int, padding: int = 2) -> tuple[int, int]:
    """(height, width) in pixels of the grid of ``count`` images of ``height x width`` in rows of ``ncol``."""
    if ncol < 1:
        raise ValueError(f"ncol must be >= 1, got {ncol}")
    nrow = max(1, -(-count // ncol))
    return padding + nrow * (height + padding), padding + ncol * (width + padding)


def make_grid(images: torch.Tensor, ncol: int, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """The images as rows of ``ncol``, separated and framed by ``padding`` pixels of ``pad_value``: ``[H, W, 3]``."""
    pixels = to_uint8(images)
    count, height, width, _ = pixels.shape
    grid = np.full((*grid_size(count, ncol, height, width, padding), 3), pad_value, np.uint8)
    for index in range(count):
        row, col = divmod(index, ncol)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top:top + height, left:left + width] = pixels[index]
    return grid


def save_png(array: np.ndarray, path) -> Path:
    """Write ``array`` ``[H, W, 3]`` uint8 to ``path`` (PNG) through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_grid(images: torch.Tensor, path, ncol: int, padding: int = 2, pad_value: int = 0) -> Path:
    """:func:`make_grid` then :func:`save_png`."""
    return save_png(make_grid(images, ncol, padding, pad_value), path)
