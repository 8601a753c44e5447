// AdaIN with noise injection, per (n, c) plane of H*W elements:
//   pre = x + noise_weight[c] * noise[n],  h = leaky_relu(pre),  y = gamma[n, c] * (h - mean) * rstd + beta[n, c]
// with mean and the biased variance of h over the plane, rstd = 1 / sqrt(var + eps).
// The parameter struct and the per-element math, shared by the host code, the CPU kernel and the CUDA kernel.
//
// Every kernel works on h shifted by the plane's first value, s = h - h[0]: the statistics stay exact for planes
// whose mean is large next to their spread. The saved `mean` is therefore the mean of s, not of h; the backward
// pass recomputes h[0] from x and noise exactly as the forward pass did.
#pragma once
#include <c10/core/ScalarType.h>

#include <cstdint>

#include "../common.h"

namespace stylegan_cuda {

struct AdainParams {
  const void* x;             // [N, C, H, W], contiguous, or channels_last on the CPU
  const void* noise;         // [N, 1, H, W] contiguous; a single zero plane (noise_batch_stride 0) when there is none
  const void* noise_weight;  // [C]
  const void* gamma;         // [N, C]
  const void* beta;          // [N, C], forward only
  const void* grad_y;        // like x, backward only
  // Per-plane statistics [N, C], float32 (float64 for float64 x): written by forward, read by backward.
  void* mean;  // mean of h - h[0]
  void* rstd;
  void* y;                  // forward: like x
  void* grad_x;             // backward: like x
  void* grad_gamma;         // backward: [N, C] in the statistics' dtype
  void* grad_beta;          // backward: [N, C] in the statistics' dtype
  void* grad_noise_weight;  // backward: [N, C] in the statistics' dtype, each plane's share (summed over N later)
  int64_t batch, channels, plane;  // N, C, H * W
  int64_t noise_batch_stride;      // H * W, or 0 for the shared zero plane
  bool channels_last;              // x, y, grad_y and grad_x are [N, H, W, C] in memory
  double negative_slope;
  double eps;
};

template <typename T>
SGC_HOST_DEVICE T pre_activation(T x, T noise_weight, T noise) {
  return x + noise_weight * noise;
}

// The gradient reaching pre for one element: the instance norm's backward through (h - mean) * rstd with
// scale = gamma * rstd, mean_grad = mean(grad_y), mean_grad_xhat = mean(grad_y * xhat) over the plane.
template <typename T>
SGC_HOST_DEVICE T adain_grad_pre(T grad_y, T pre, T xhat, T scale, T mean_grad, T mean_grad_xhat, T negative_slope) {
  return leaky_relu_grad(scale * (grad_y - mean_grad - xhat * mean_grad_xhat), pre, negative_slope);
}

enum class AdainPass { kForward, kBackward };

// The kernels, in adain_cpu.cpp and adain_cuda.cu.
void adain_cpu(const AdainParams& p, AdainPass pass, c10::ScalarType dtype);
void adain_cuda(const AdainParams& p, AdainPass pass, c10::ScalarType dtype);

}  // namespace stylegan_cuda
