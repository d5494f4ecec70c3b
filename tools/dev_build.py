"""Builds a development copy of the extension from a subset of ``csrc/``.

Lets people work on one kernel without building (or breaking) the others:

    python tools/dev_build.py --ops fps knn radius --out /tmp/pts_build
    POINTCMT_EXT_PATH=/tmp/pts_build/pointcmt_dev.so pytest tests/test_fps.py

``--cuda`` adds the matching ``csrc/cuda/<op>_cuda.cu`` files (compile/link check).
"""
import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="*", default=None, help="op names (default: all in csrc/cpu)")
    parser.add_argument("--out", required=True, help="build directory")
    parser.add_argument("--cuda", action="store_true", help="also compile csrc/cuda/<op>_cuda.cu")
    args = parser.parse_args()

    from torch.utils.cpp_extension import load

    csrc = os.path.join(ROOT, "csrc")
    if args.ops is None:
        cpu = sorted(glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
        cu = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    else:
        # the ops' own files plus the shared helpers every op links against (cpu/parallel.cpp)
        shared = [f for f in sorted(glob.glob(os.path.join(csrc, "cpu", "*.cpp"))) if not f.endswith("_cpu.cpp")]
        cpu = [os.path.join(csrc, "cpu", f"{op}_cpu.cpp") for op in args.ops] + shared
        cu = [os.path.join(csrc, "cuda", f"{op}_cuda.cu") for op in args.ops]
    sources = [os.path.join(csrc, "pointcmt.cpp")] + cpu + (cu if args.cuda else [])
    os.makedirs(args.out, exist_ok=True)
    load(
        name="pointcmt_dev",
        sources=sources,
        extra_include_paths=[csrc],
        extra_cflags=["-O3", "-std=c++20", "-fopenmp-simd"] + (["-DWITH_CUDA"] if args.cuda else []),
        extra_cuda_cflags=["-O3", "-std=c++20"],
        build_directory=args.out,
        is_python_module=False,
        verbose=True,
    )
    print(f"built {os.path.join(args.out, 'pointcmt_dev.so')}", file=sys.stderr)


if __name__ == "__main__":
    main()
