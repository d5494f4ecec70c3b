"""Build script for pointcmt-pyg.

Builds one extension, ``pointcmt_pyg._C``, from ``csrc/``:

* CPU kernels always (when torch can be imported at build time);
* CUDA kernels when torch has CUDA and ``CUDA_HOME`` is set, or when
  ``FORCE_CUDA=1`` (compiles every ``.cu`` file even on a machine with no GPU);
* nothing when ``POINTCMT_NO_EXT=1`` or torch cannot be imported: the package
  then runs on its pure-PyTorch reference ops (slower).

Install with ``pip install --no-build-isolation .`` so the build sees the torch
you run with. ``TORCH_CUDA_ARCH_LIST`` and ``MAX_JOBS`` are honoured (they are
read by ``torch.utils.cpp_extension``).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _pip_cuda_includes(torch_dir: str) -> list:
    """Header folders of the pip-installed CUDA libraries (``nvidia/cu13/include``
    etc. beside torch): torch's CUDA headers include cusparse.h and friends,
    which a CUDA-enabled torch wheel ships there rather than in CUDA_HOME."""
    site = os.path.dirname(torch_dir)
    found = sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))
    found += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
    return [d for i, d in enumerate(found) if d not in found[:i]
            and os.path.isfile(os.path.join(d, "cusparse.h"))]


def get_extensions():
    if _flag("POINTCMT_NO_EXT"):
        print("pointcmt-pyg: POINTCMT_NO_EXT=1, building no extension", file=sys.stderr)
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import (CUDA_HOME, BuildExtension, CppExtension,
                                               CUDAExtension)
    except Exception as exc:  # torch is missing at build time: pure-Python package
        print(f"pointcmt-pyg: torch not importable ({exc}); building no extension "
              "(use `pip install --no-build-isolation .` to build the ops)", file=sys.stderr)
        return [], {}

    sources = [os.path.join("csrc", "pointcmt.cpp")]
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    with_cuda = _flag("FORCE_CUDA") or (torch.cuda.is_available() and CUDA_HOME is not None)
    if _flag("FORCE_CPU"):
        with_cuda = False

    cxx = ["-O3", "-std=c++20", "-fopenmp-simd"]
    extra = {"cxx": cxx}
    define_macros = []
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define_macros.append(("WITH_CUDA", None))
        extra["nvcc"] = ["-O3", "-std=c++20"]
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension
    print(f"pointcmt-pyg: building pointcmt_pyg._C ({'CPU+CUDA' if with_cuda else 'CPU'})",
          file=sys.stderr)
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        include_dirs += _pip_cuda_includes(os.path.dirname(torch.__file__))
    ext = ext_cls(
        "pointcmt_pyg._C",
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        py_limited_api=True,
    )
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = get_extensions()

setup(
    packages=find_packages(include=["pointcmt_pyg", "pointcmt_pyg.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
)
