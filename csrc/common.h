// Shared by every op: the host/device qualifier, the CPU hot-loop clones and the leaky ReLU of the per-element math,
// and the argument checks of the host code.
#pragma once

#if defined(__CUDACC__)
#define SGC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SGC_HOST_DEVICE inline
#endif

// A CPU hot loop in a build for any x86-64 (the ahead-of-time build defines STYLEGAN_CUDA_CPU_CLONES): compiled for
// AVX-512, for AVX2 and for the baseline, the best one picked when the library loads. What the loop inlines is
// compiled with it; a lambda run by at::parallel_for is not, so the loop is a function of its own. The just-in-time
// build compiles everything for its own machine (-march=native) instead.
#if defined(STYLEGAN_CUDA_CPU_CLONES) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12
#define SGC_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SGC_CPU_CLONES
#endif

namespace stylegan_cuda {

// Leaky ReLU, and its derivative applied to an incoming gradient (0 counts as negative, as in F.leaky_relu's
// backward).
template <typename T>
SGC_HOST_DEVICE T leaky_relu(T v, T negative_slope) {
  return v > T(0) ? v : v * negative_slope;
}

template <typename T>
SGC_HOST_DEVICE T leaky_relu_grad(T grad, T v, T negative_slope) {
  return v > T(0) ? grad : grad * negative_slope;
}

}  // namespace stylegan_cuda

#ifndef __CUDACC__
#include <ATen/ATen.h>
#include <c10/util/strides.h>

#include <vector>

namespace stylegan_cuda {

// float16, bfloat16, float32 or float64: what every kernel of this project accepts.
inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble || t.scalar_type() == at::kHalf ||
                  t.scalar_type() == at::kBFloat16,
              name, " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
              t.scalar_type());
}

inline void check_same_device_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), name, " must be on the same device as ", ref_name, " (", ref.device(),
              "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " must have the same dtype as ", ref_name, " (",
              ref.scalar_type(), "), got ", t.scalar_type());
}

// `t` laid out in memory exactly as `like` (same sizes and strides), copying only when it is not already.
inline at::Tensor with_layout_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  return at::empty_like(like).copy_(t);
}

// A fresh output with the memory format of `x` (contiguous or channels_last), always dense.
inline at::Tensor empty_dense_like(const at::Tensor& x) {
  return at::empty_like(x, x.is_non_overlapping_and_dense() ? at::MemoryFormat::Preserve : x.suggest_memory_format());
}

// The strides of empty_dense_like(x), without allocating it.
inline std::vector<int64_t> dense_strides_like(const at::Tensor& x) {
  if (x.is_non_overlapping_and_dense()) return x.strides().vec();
  if (x.suggest_memory_format() == at::MemoryFormat::ChannelsLast) return c10::get_channels_last_strides_2d(x.sizes());
  const auto strides = c10::contiguous_strides(x.sizes());
  return {strides.begin(), strides.end()};
}

}  // namespace stylegan_cuda
#endif
