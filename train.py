"""Train StyleGAN (v1) with progressive growing on a database made by prepare_data.py.

Usage: python train.py DATASET_LMDB --out DIR [--iterations N] [--loss r1|wgan-gp] [--mixing] [--sched] ...
       python train.py --resume DIR/checkpoint            # continue where the run stopped
       torchrun --nproc_per_node 8 train.py DATASET_LMDB ...  # several GPUs
See ``python train.py --help`` and ``stylegan_cuda/train/`` (``trainer.py`` first).
"""

import sys

from stylegan_cuda.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
