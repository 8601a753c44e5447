"""Images from trained generators: truncated samples, style-mixing grids, PNG grids (``generate.py``)."""

from .grid import make_grid, save_grid, save_png
from .sampling import GenerateError, LoadedGenerator, Sampler, load_generator, mean_style, parse_mixing_ranges

__all__ = [
    "GenerateError",
    "LoadedGenerator",
    "Sampler",
    "load_generator",
    "make_grid",
    "mean_style",
    "parse_mixing_ranges",
    "save_grid",
    "save_png",
]
