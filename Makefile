# The two commands on top of the README:
#   make run    # set up, then run the ModelNet40 example (embedded synthetic data unless DATA=...)
#   make test   # set up, then run the test suite (pytest + the C++ ctest)
# Set-up is idempotent: a venv in .venv with pinned torch, the dev requirements
# and this package built in place (CPU kernels, plus CUDA kernels when nvcc exists).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
CUDA_HOME ?= /usr/local/cuda
# Compile (and link) every .cu file when nvcc is there, even without a GPU.
FORCE_CUDA ?= $(shell test -x $(CUDA_HOME)/bin/nvcc && echo 1 || echo 0)
TORCH_CUDA_ARCH_LIST ?= 9.0
MAX_JOBS ?= 2
DATA ?= synthetic
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test test-reference test-cuda-emu ctest bench baselines wheel clean

$(VENV)/.deps: requirements-dev.txt
	@command -v apt-get >/dev/null && ! dpkg -s libusb-1.0-0 >/dev/null 2>&1 && \
	  (apt-get install -y libusb-1.0-0 || (apt-get update && apt-get install -y libusb-1.0-0)) || true
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install $(TORCH_PIN)
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

# The sources of the extension (pointcmt_pyg/ops/_ext.py SOURCE_PATTERNS warns at import about the same set).
$(VENV)/.built: $(VENV)/.deps setup.py $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh csrc/*/*/*.cuh)
	FORCE_CUDA=$(FORCE_CUDA) CUDA_HOME=$(CUDA_HOME) CPATH="$$(ls -d $(abspath $(VENV))/lib/python3*/site-packages/nvidia/cu13/include 2>/dev/null | head -n1)" \
	  TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" MAX_JOBS=$(MAX_JOBS) \
	  $(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

setup: $(VENV)/.built

run: setup
	$(PY) examples/modelnet40.py --data $(DATA) $(ARGS)

test: setup ctest test-cuda-emu
	$(PY) -m pytest -q --ignore=tests/test_cuda_emu.py $(PYTEST_ARGS)
	POINTCMT_DISABLE_EXT=1 $(PY) -m pytest -q tests/test_fps.py tests/test_knn.py tests/test_radius.py tests/test_emd.py tests/test_ext.py tests/test_torchscript.py

# The CUDA kernels' device code (csrc/cuda/kernels) on the CPU emulator of
# tests/cuda_emu, against the CPU ops, plus the emulator's sanitizer self-test.
test-cuda-emu: setup
	$(PY) -m pytest -q tests/test_cuda_emu.py

# The same suite on the pure-PyTorch reference path (extension disabled).
test-reference: setup
	POINTCMT_DISABLE_EXT=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# A CUDA build of torch makes find_package(Torch) look for the CUDA toolkit; pip's
# torch wheels keep nvrtc in site-packages/nvidia/cu*/lib, where CMake does not look.
NVRTC = $(firstword $(wildcard $(abspath $(VENV))/lib/python3*/site-packages/nvidia/cu*/lib/libnvrtc.so.*))
CMAKE_CUDA_ARGS = $(if $(wildcard $(CUDA_HOME)/bin/nvcc),-DCUDAToolkit_ROOT=$(CUDA_HOME) -DCMAKE_CUDA_COMPILER=$(CUDA_HOME)/bin/nvcc) \
  $(if $(NVRTC),-DCUDA_nvrtc_LIBRARY=$(NVRTC))

ctest: $(VENV)/.deps
	PATH="$(CUDA_HOME)/bin:$$PATH" $(VENV)/bin/cmake -S . -B cmake-build -DCMAKE_BUILD_TYPE=Release $(CMAKE_CUDA_ARGS) \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" >/dev/null
	$(VENV)/bin/cmake --build cmake-build -j $(MAX_JOBS)
	cd cmake-build && ../$(VENV)/bin/ctest --output-on-failure

bench: setup
	$(PY) bench/ops.py

baselines: $(VENV)/.deps
	FORCE_ONLY_CPU=1 $(PY) -m pip install --no-build-isolation torch-scatter torch-cluster

wheel: $(VENV)/.deps
	$(PY) -m pip wheel --no-build-isolation --no-deps -w dist .

clean:
	rm -rf build cmake-build dist *.egg-info pointcmt_pyg/_C*.so $(VENV)/.built
