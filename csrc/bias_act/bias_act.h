// Fused bias + scaled leaky ReLU: y = scale * leaky_relu(x + bias[c], negative_slope).
// The parameter struct and the per-element math, shared by the host code, the CPU kernel and the CUDA kernel.
#pragma once
#include <c10/core/ScalarType.h>

#include <cstdint>

#include "../common.h"

namespace stylegan_cuda {

// Both passes are elementwise over a dense tensor walked in memory order. Element i belongs to channel
// (i / inner) % channels, which holds for every dense layout (inner = stride(1): H*W contiguous, 1 channels_last).
//
// The forward pass records, instead of keeping y, one bit per element: bit i % 32 of word i / 32 of `positive` is set
// where x + bias > 0. That is all the backward pass needs, so it reads 1/32 of a float tensor instead of y.
struct BiasActParams {
  const void* in;      // forward: x;    backward: grad of y
  const void* bias;    // forward: bias (nullptr: none); backward: unused
  void* out;           // forward: y;    backward: grad of x
  uint32_t* positive;  // ceil(numel / 32) words: written by the forward pass, read by the backward pass
  void* run_sums;      // backward, optional (CPU, inner % 32 == 0): grad_x summed over each run of `inner` elements,
                       // in the op-math type
  int64_t numel;
  int64_t channels;
  int64_t inner;
  double negative_slope;
  double scale;
};

constexpr int kBitsPerWord = 32;

inline int64_t positive_words(int64_t numel) { return (numel + kBitsPerWord - 1) / kBitsPerWord; }

template <typename T>
SGC_HOST_DEVICE T scaled_leaky_relu(T v, T negative_slope, T scale) {
  return leaky_relu(v, negative_slope) * scale;
}

// d y / d x: scale where x + bias > 0 (positive = 1), negative_slope * scale elsewhere (positive = 0; at 0 too, as
// F.leaky_relu's backward). An integer flag rather than a bool: GCC vectorizes the CPU loop with it.
template <typename T>
SGC_HOST_DEVICE T scaled_leaky_relu_grad(T grad, uint32_t positive, T negative_slope, T scale) {
  return grad * (positive ? scale : negative_slope * scale);
}

enum class BiasActPass { kForward, kBackward };

// The kernels, in bias_act_cpu.cpp and bias_act_cuda.cu.
void bias_act_cpu(const BiasActParams& p, BiasActPass pass, c10::ScalarType dtype);
void bias_act_cuda(const BiasActParams& p, BiasActPass pass, c10::ScalarType dtype);

}  // namespace stylegan_cuda
