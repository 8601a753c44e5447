// CUDA kernels of upfirdn2d: a shared-memory tiled kernel for the common (up, down, kernel size) cases of contiguous
// tensors, and a direct kernel for everything else (any geometry; channels_last with threads along the channels).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <limits>

#include "../cuda_utils.cuh"
#include "upfirdn2d.h"

namespace stylegan_cuda {
namespace {

constexpr int kTileThreadsX = 64, kTileThreadsY = 4;
constexpr int kTileOutW = kTileThreadsX, kTileOutH = 16;

// The input rows (or columns) a tile of `out` outputs reads, at most.
constexpr int tile_input_extent(int out, int up, int down, int k) { return ((out - 1) * down + k - 1) / up + 1; }

// One block makes a kTileOutH x kTileOutW tile of outputs for one plane after another. The input tile with its halo
// is loaded once into shared memory (zero outside the image, converted to acc_t); each thread then makes one output
// column of the tile from the UP-strided taps of its phase, never touching the inserted zeros.
template <typename scalar_t, int UP, int DOWN, int K>
__global__ void __launch_bounds__(kTileThreadsX* kTileThreadsY) upfirdn2d_tiled(Upfirdn2dParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kInH = tile_input_extent(kTileOutH, UP, DOWN, K), kInW = tile_input_extent(kTileOutW, UP, DOWN, K);
  constexpr int kTaps = (K + UP - 1) / UP;
  constexpr int kThreads = kTileThreadsX * kTileThreadsY;
  __shared__ acc_t tile[kInH][kInW];
  __shared__ acc_t weights[K][K];

  const int tid = threadIdx.y * kTileThreadsX + threadIdx.x;
  const auto* kernel = static_cast<const acc_t*>(p.kernel);
  if (tid < K * K) weights[tid / K][tid % K] = kernel[kernel_index(tid / K, tid % K, K, K, p.flip_kernel)];
  const int H = static_cast<int>(p.in_h), W = static_cast<int>(p.in_w);
  const int out_h = static_cast<int>(p.out_h), out_w = static_cast<int>(p.out_w);
  const int ox_tile = blockIdx.x * kTileOutW, oy_tile = blockIdx.y * kTileOutH;
  const int ix_tile = static_cast<int>(axis_taps(ox_tile, UP, DOWN, p.pad_x0, K).first);
  const int iy_tile = static_cast<int>(axis_taps(oy_tile, UP, DOWN, p.pad_y0, K).first);
  const int ox = ox_tile + threadIdx.x;
  const AxisTaps tx = axis_taps(ox, UP, DOWN, p.pad_x0, K);
  const int col = static_cast<int>(tx.first) - ix_tile;
  const int64_t planes = p.batch * p.channels;

  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const scalar_t* x = static_cast<const scalar_t*>(p.x) + plane * H * W;
    scalar_t* out = static_cast<scalar_t*>(p.out) + plane * out_h * out_w;
    __syncthreads();  // the previous plane's tile is used up
    for (int i = tid; i < kInH * kInW; i += kThreads) {
      const int iy = iy_tile + i / kInW, ix = ix_tile + i % kInW;
      const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
      tile[i / kInW][i % kInW] = inside ? static_cast<acc_t>(x[iy * W + ix]) : acc_t(0);
    }
    __syncthreads();
    if (ox >= out_w) continue;
    for (int oy = oy_tile + threadIdx.y; oy < min(oy_tile + kTileOutH, out_h); oy += kTileThreadsY) {
      const AxisTaps ty = axis_taps(oy, UP, DOWN, p.pad_y0, K);
      const int row = static_cast<int>(ty.first) - iy_tile;
      acc_t acc = 0;
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        const int i = ty.offset + t * UP;
        if (i >= K) break;
#pragma unroll
        for (int s = 0; s < kTaps; ++s) {
          const int j = tx.offset + s * UP;
          if (j >= K) break;
          acc += weights[i][j] * tile[row + t][col + s];
        }
      }
      out[oy * out_w + ox] = static_cast<scalar_t>(acc);
    }
  }
}

// Any geometry and either memory format: one thread per output, taps read straight from global memory (cached).
// Threads follow the output's memory order, so channels_last runs along the channels and reads stay coalesced.
template <typename scalar_t, typename index_t, bool CHANNELS_LAST>
__global__ void upfirdn2d_direct(Upfirdn2dParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(p.x);
  const auto* kernel = static_cast<const acc_t*>(p.kernel);
  auto* out = static_cast<scalar_t*>(p.out);
  const index_t C = p.channels, H = p.in_h, W = p.in_w, out_h = p.out_h, out_w = p.out_w;
  const index_t numel = p.batch * C * out_h * out_w;
  for (index_t idx = index_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < numel;
       idx += index_t(gridDim.x) * blockDim.x) {
    index_t n, c, oy, ox;
    if (CHANNELS_LAST) {
      c = idx % C;
      ox = idx / C % out_w;
      oy = idx / (C * out_w) % out_h;
      n = idx / (C * out_w * out_h);
    } else {
      ox = idx % out_w;
      oy = idx / out_w % out_h;
      c = idx / (out_w * out_h) % C;
      n = idx / (out_w * out_h * C);
    }
    const AxisTaps ty = axis_taps(oy, p.up_y, p.down_y, p.pad_y0, p.kernel_h);
    const AxisTaps tx = axis_taps(ox, p.up_x, p.down_x, p.pad_x0, p.kernel_w);
    acc_t acc = 0;
    for (int t = 0; t < ty.count; ++t) {
      const index_t iy = ty.first + t;
      if (iy < 0 || iy >= H) continue;
      for (int s = 0; s < tx.count; ++s) {
        const index_t ix = tx.first + s;
        if (ix < 0 || ix >= W) continue;
        const acc_t w = __ldg(kernel + kernel_index(ty.offset + t * p.up_y, tx.offset + s * p.up_x, p.kernel_h,
                                                    p.kernel_w, p.flip_kernel));
        const index_t in_index = CHANNELS_LAST ? ((n * H + iy) * W + ix) * C + c : ((n * C + c) * H + iy) * W + ix;
        acc += w * static_cast<acc_t>(x[in_index]);
      }
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, int UP, int DOWN, int K>
void launch_tiled(const Upfirdn2dParams& p) {
  const dim3 block(kTileThreadsX, kTileThreadsY);
  const dim3 grid(static_cast<unsigned>((p.out_w + kTileOutW - 1) / kTileOutW),
                  static_cast<unsigned>((p.out_h + kTileOutH - 1) / kTileOutH),
                  static_cast<unsigned>(std::min<int64_t>(p.batch * p.channels, 65535)));
  upfirdn2d_tiled<scalar_t, UP, DOWN, K><<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename index_t>
void launch_direct(const Upfirdn2dParams& p) {
  constexpr int kThreads = 256;
  const int blocks = grid_size(p.batch * p.channels * p.out_h * p.out_w, kThreads);
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (p.channels_last)
    upfirdn2d_direct<scalar_t, index_t, true><<<blocks, kThreads, 0, stream>>>(p);
  else
    upfirdn2d_direct<scalar_t, index_t, false><<<blocks, kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The tiled kernel's cases: blur (and its gradient), upsample_blur and its gradient, the 2x2 box of
// upsample_nearest_2x / downsample_avg_2x and their gradients. True when one of them ran.
template <typename scalar_t>
bool try_tiled(const Upfirdn2dParams& p) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  const bool isotropic = p.up_x == p.up_y && p.down_x == p.down_y && p.kernel_h == p.kernel_w;
  // Narrow images leave most of a 64-wide tile idle: the direct kernel serves them better.
  const bool fits = !p.channels_last && p.out_w >= kTileOutW / 2 && p.in_h * p.in_w < kIntMax &&
                    p.out_h * p.out_w < kIntMax && (p.out_h + kTileOutH - 1) / kTileOutH <= 65535;
  if (!isotropic || !fits) return false;
  const int up = p.up_x, down = p.down_x, k = p.kernel_w;
  if (up == 1 && down == 1 && k == 3) launch_tiled<scalar_t, 1, 1, 3>(p);
  else if (up == 2 && down == 1 && k == 4) launch_tiled<scalar_t, 2, 1, 4>(p);
  else if (up == 1 && down == 2 && k == 4) launch_tiled<scalar_t, 1, 2, 4>(p);
  else if (up == 2 && down == 1 && k == 2) launch_tiled<scalar_t, 2, 1, 2>(p);
  else if (up == 1 && down == 2 && k == 2) launch_tiled<scalar_t, 1, 2, 2>(p);
  else return false;
  return true;
}

}  // namespace

void upfirdn2d_cuda(const Upfirdn2dParams& p, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "upfirdn2d_cuda", [&] {
    if (try_tiled<scalar_t>(p)) return;
    const int64_t largest = std::max(p.batch * p.channels * p.in_h * p.in_w, p.batch * p.channels * p.out_h * p.out_w);
    if (largest < (int64_t(1) << 30)) launch_direct<scalar_t, int32_t>(p);
    else launch_direct<scalar_t, int64_t>(p);
  });
}

}  // namespace stylegan_cuda
