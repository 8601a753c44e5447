"""Install stylegan_cuda.

``pip install .`` needs no compiler: the C++/CUDA sources ship inside the package (``stylegan_cuda/_csrc``) and are
built just in time on first use. ``STYLEGAN_CUDA_AOT=1 pip install --no-build-isolation .`` compiles the same
extension now (with the CUDA kernels when ``stylegan_cuda.ops.build.want_cuda()`` says so; TORCH_CUDA_ARCH_LIST
and STYLEGAN_CUDA_BUILD_CUDA apply as for the JIT build). The library records the torch it was built against; after a
torch upgrade the package builds just in time instead of loading it.
"""

import json
import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithSources(build_py):
    """Copies csrc/ into the package so that an installed copy can build its kernels just in time."""

    def run(self):
        super().run()
        shutil.copytree(ROOT / "csrc", Path(self.build_lib) / "stylegan_cuda" / "_csrc", dirs_exist_ok=True)


def ahead_of_time_build():
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError as error:
        raise SystemExit(
            f"STYLEGAN_CUDA_AOT=1 compiles against the installed torch, which this build cannot import ({error}). "
            "Install torch first and run: STYLEGAN_CUDA_AOT=1 pip install --no-build-isolation ."
        ) from error

    from stylegan_cuda.ops import build

    with_cuda = build.want_cuda()
    archs = build.cuda_archs() if with_cuda else ""
    if with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        build.point_torch_at_cuda_home()
    cflags, nvcc_flags = build.compile_flags(with_cuda, native=False)
    sources = [os.path.relpath(p, ROOT) for p in build.source_files(with_cuda)]
    make = CUDAExtension if with_cuda else CppExtension
    extension = make(
        "stylegan_cuda._C",
        sources,
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args={"cxx": cflags, "nvcc": nvcc_flags} if with_cuda else {"cxx": cflags},
        extra_link_args=build.LINK_FLAGS,
        py_limited_api=False,
    )

    class BuildExtensionWithInfo(BuildExtension):
        def run(self):
            super().run()
            info = Path(self.build_lib) / "stylegan_cuda" / "_C_build_info.json"
            # The torch version: a later torch cannot load this library, so the package then builds just in time.
            info.write_text(json.dumps({"with_cuda": with_cuda, "archs": archs, "torch": torch.__version__}))

    return [extension], {"build_ext": BuildExtensionWithInfo.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = [], {"build_py": BuildPyWithSources}
if os.environ.get("STYLEGAN_CUDA_AOT") == "1":
    extensions, commands = ahead_of_time_build()
    ext_modules += extensions
    cmdclass.update(commands)

setup(
    name="stylegan_cuda",
    version="0.1.0",
    description="StyleGAN (v1) in PyTorch on fused C++/CUDA kernels",
    packages=find_packages(include=["stylegan_cuda", "stylegan_cuda.*"]),
    package_data={"stylegan_cuda": ["data/demo_images/*"]},
    python_requires=">=3.9",
    install_requires=["torch>=2.6", "ninja", "numpy", "pillow", "lmdb"],
    # The command-line tools, for an installed package (from a checkout: python train.py, ...).
    entry_points={"console_scripts": [
        "stylegan-prepare = stylegan_cuda.data.prepare:main",
        "stylegan-demo-images = stylegan_cuda.data.demo:main",
        "stylegan-train = stylegan_cuda.train.cli:main",
        "stylegan-generate = stylegan_cuda.generate.cli:main",
        "stylegan-convert = stylegan_cuda.convert:main",
        "stylegan-build = stylegan_cuda.build:main",
    ]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
