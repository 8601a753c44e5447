// upfirdn2d: upsample by zero insertion, pad (negative crops), FIR filter, downsample, every channel of [N, C, H, W].
// The parameter struct and the polyphase tap arithmetic, shared by the host code, the CPU kernel and the CUDA kernel.
#pragma once
#include <c10/core/ScalarType.h>

#include <cstdint>

#include "../common.h"

namespace stylegan_cuda {

constexpr int kUpfirdn2dMaxKernelSize = 16;

struct Upfirdn2dParams {
  const void* x;          // [N, C, in_h, in_w], contiguous or channels_last (as `out`)
  const void* kernel;     // [kernel_h, kernel_w], contiguous, on the device of x, in x's accumulation type
  void* out;              // [N, C, out_h, out_w]
  int64_t batch, channels, in_h, in_w, out_h, out_w;
  int up_x, up_y, down_x, down_y;
  int pad_x0, pad_y0;     // the far-side pads only decide the output size
  int kernel_h, kernel_w;
  bool flip_kernel;       // false: convolution with `kernel` (the op); true: with it flipped (the op's backward)
  bool channels_last;
};

SGC_HOST_DEVICE int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

SGC_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// The input samples one output sample reads along one axis. Output o covers the upsampled, padded positions
// u .. u + k - 1 with u = o * down - pad0; of these only the multiples of `up` hold input samples (the rest are the
// inserted zeros), so the taps are inputs `first`, `first + 1`, ..., `first + count - 1`, and tap t meets window
// offset `offset + t * up`.
struct AxisTaps {
  int64_t first;
  int offset;
  int count;
};

SGC_HOST_DEVICE AxisTaps axis_taps(int64_t o, int up, int down, int pad0, int k) {
  const int64_t u = o * down - pad0;
  const int64_t first = ceil_div(u, up);
  const int offset = static_cast<int>(first * up - u);
  return {first, offset, offset < k ? (k - 1 - offset) / up + 1 : 0};
}

// The weight at window offset (i, j): the kernel flipped for a true convolution, as stored for a correlation.
SGC_HOST_DEVICE int kernel_index(int i, int j, int kernel_h, int kernel_w, bool flip_kernel) {
  return flip_kernel ? i * kernel_w + j : (kernel_h - 1 - i) * kernel_w + (kernel_w - 1 - j);
}

// The kernels, in upfirdn2d_cpu.cpp and upfirdn2d_cuda.cu.
void upfirdn2d_cpu(const Upfirdn2dParams& p, c10::ScalarType dtype);
void upfirdn2d_cuda(const Upfirdn2dParams& p, c10::ScalarType dtype);

}  // namespace stylegan_cuda
