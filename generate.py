"""Write a sample grid and style-mixing grids from a checkpoint of train.py or of the seed.

Usage: python generate.py CHECKPOINT --out DIR [--truncation 0.7] [--n_row 3 --n_col 5] [--seed 0]
       [--mixing_range 0,1|coarse|middle|fine|all ...] [--size N (only for files that do not record it)]
See ``python generate.py --help`` and ``stylegan_cuda/generate/``.
"""

import sys

from stylegan_cuda.generate.cli import main

if __name__ == "__main__":
    sys.exit(main())
