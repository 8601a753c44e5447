"""StyleGAN (the style-based generator, v1) on fused C++/CUDA kernels.

Importing the package is cheap and needs no compiler: the kernels are built the first time an op needs them
(see :mod:`stylegan_cuda.ops.build`).
"""

__version__ = "0.1.0"
