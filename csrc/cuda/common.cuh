// ATen-side helpers of the CUDA ops (argument checks); the device code itself
// lives in torch-free headers under cuda/kernels/ (see device.cuh).
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels/device.cuh"

namespace pointcmt {
namespace cuda {

using norms::row_norms_kernel;

inline void check_cuda_points(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "pointcmt: '", name, "' must be a CUDA tensor");
  TORCH_CHECK(t.dim() == 2, "pointcmt: '", name, "' must have shape (N, D), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "pointcmt: '", name, "' must be float32 or float64, got ", t.scalar_type());
}

inline void check_cuda_index(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device() == like.device(), "pointcmt: '", name, "' must be on ", like.device());
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong, "pointcmt: '", name,
              "' must be an int64 vector");
}

}  // namespace cuda
}  // namespace pointcmt
