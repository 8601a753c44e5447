// Fused bias + scaled leaky ReLU: y = scale * leaky_relu(x + bias[c], negative_slope).
// The parameter struct and the per-element math, shared by the host code, the CPU kernel and the CUDA kernel.
#pragma once
#include <c10/core/ScalarType.h>

#include <cstdint>

#include "../common.h"

namespace stylegan_cuda {

// Both passes are elementwise over a dense tensor walked in memory order. Element i belongs to channel
// (i / inner) % channels, which holds for contiguous (inner = H*W) and channels_last (inner = 1) tensors alike.
struct BiasActParams {
  const void* in;    // forward: x;    backward: grad of y
  const void* aux;   // forward: bias (nullptr: none); backward: y
  void* out;         // forward: y;    backward: grad of x
  int64_t numel;
  int64_t channels;
  int64_t inner;
  double negative_slope;
  double scale;
};

template <typename T>
SGC_HOST_DEVICE T scaled_leaky_relu(T v, T negative_slope, T scale) {
  return (v > T(0) ? v : v * negative_slope) * scale;
}

// The derivative read off the output: y > 0 exactly where x + bias > 0, because scale > 0 and negative_slope >= 0.
template <typename T>
SGC_HOST_DEVICE T scaled_leaky_relu_grad(T grad, T y, T negative_slope, T scale) {
  return y > T(0) ? grad * scale : grad * (negative_slope * scale);
}

enum class BiasActPass { kForward, kBackward };

// The kernels, in bias_act_cpu.cpp and bias_act_cuda.cu.
void bias_act_cpu(const BiasActParams& p, BiasActPass pass, c10::ScalarType dtype);
void bias_act_cuda(const BiasActParams& p, BiasActPass pass, c10::ScalarType dtype);

}  // namespace stylegan_cuda
