"""Build a multi-resolution LMDB database from a folder of images.

Usage: python prepare_data.py --out LMDB_PATH [--sizes 8,16,32] [--n_worker N]
       [--resample lanczos|bicubic|bilinear|box] [--format jpeg|png] [--overwrite] DATASET_PATH
See ``python prepare_data.py --help`` and ``stylegan_cuda/data/prepare.py``.
"""

import sys

from stylegan_cuda.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
