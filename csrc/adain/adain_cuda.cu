// CUDA kernels of adain_noise: one block per contiguous (n, c) plane.
//
// A block walks its plane in tiles of blockDim.x * kItems elements, each thread holding kItems of them in
// registers (16-byte loads where alignment allows). Planes up to one tile (16384 elements, 128x128, for 2- and
// 4-byte types) are read once and written once: the statistics and the output come from the registers. Larger
// planes are read a second time for the output, mostly from L2.
// Statistics: each thread folds its tiles into (count, mean, M2) with exact two-pass sums over its registers, then
// Chan's formula merges threads, warps and the block; values are shifted by h[0] (see adain.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <climits>

#include "../cuda_utils.cuh"
#include "adain.h"

namespace stylegan_cuda {
namespace {

constexpr int kMaxThreads = 1024;

// Elements one thread holds per tile: 64 bytes of half or float32 values (as float), 64 bytes of doubles.
template <typename scalar_t>
constexpr int kItems = sizeof(scalar_t) == 8 ? 8 : 16;

template <typename T, int K>
struct Fields {
  T v[K];
};

// Reduces one value per thread over the block with `merge` (identity: `identity`); every thread gets the result.
template <typename T, int K, typename Merge>
__device__ Fields<T, K> block_reduce(Fields<T, K> value, Fields<T, K> identity, const Merge& merge) {
  __shared__ Fields<T, K> partial[kMaxThreads / 32];
  __shared__ Fields<T, K> result;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const auto warp_reduce = [&](Fields<T, K> v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      Fields<T, K> other;
#pragma unroll
      for (int k = 0; k < K; ++k) other.v[k] = __shfl_xor_sync(0xffffffffu, v.v[k], offset);
      v = merge(v, other);
    }
    return v;
  };
  value = warp_reduce(value);
  __syncthreads();  // an earlier call's readers of `result` are done
  if (lane == 0) partial[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = warp_reduce(lane < warps ? partial[lane] : identity);
    if (lane == 0) result = value;
  }
  __syncthreads();
  return result;
}

template <typename T>
struct Sum {
  template <int K>
  __device__ Fields<T, K> operator()(Fields<T, K> a, const Fields<T, K>& b) const {
#pragma unroll
    for (int k = 0; k < K; ++k) a.v[k] += b.v[k];
    return a;
  }
};

// (count, mean, M2) of two disjoint sets merged into those of their union (Chan et al.).
template <typename T>
struct ChanMerge {
  __device__ Fields<T, 3> operator()(const Fields<T, 3>& a, const Fields<T, 3>& b) const {
    const T count = a.v[0] + b.v[0];
    if (count == T(0)) return a;
    const T delta = b.v[1] - a.v[1], share = b.v[0] / count;
    return {{count, a.v[1] + delta * share, a.v[2] + b.v[2] + delta * delta * a.v[0] * share}};
  }
};

// The elements of one plane that this thread holds for the tile starting at `base`: groups of VEC consecutive
// elements, group j at base + (j * blockDim.x + threadIdx.x) * VEC, so that a warp's loads are contiguous.
template <typename scalar_t>
struct TileLayout {
  static constexpr int kVec = kVecWidth<scalar_t>;
  static constexpr int kGroups = kItems<scalar_t> / kVec;
  int plane;        // elements in the plane
  bool vectorized;  // every plane of every tensor is 16-byte aligned

  __device__ int group_start(int base, int j) const { return base + (j * int(blockDim.x) + int(threadIdx.x)) * kVec; }
  __device__ bool valid(int base, int k) const { return group_start(base, k / kVec) + k % kVec < plane; }

  // out[k] for this thread's elements of the tile, 0 past the end of the plane.
  template <typename acc_t>
  __device__ void load(const scalar_t* ptr, int base, acc_t* out) const {
#pragma unroll
    for (int j = 0; j < kGroups; ++j) {
      const int start = group_start(base, j);
      if (vectorized && start < plane) {
        const auto v = *reinterpret_cast<const Vec<scalar_t, kVec>*>(ptr + start);
#pragma unroll
        for (int e = 0; e < kVec; ++e) out[j * kVec + e] = static_cast<acc_t>(v.v[e]);
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e)
          out[j * kVec + e] = start + e < plane ? static_cast<acc_t>(ptr[start + e]) : acc_t(0);
      }
    }
  }

  template <typename acc_t>
  __device__ void store(scalar_t* ptr, int base, const acc_t* in) const {
#pragma unroll
    for (int j = 0; j < kGroups; ++j) {
      const int start = group_start(base, j);
      if (vectorized && start < plane) {
        Vec<scalar_t, kVec> v;
#pragma unroll
        for (int e = 0; e < kVec; ++e) v.v[e] = static_cast<scalar_t>(in[j * kVec + e]);
        *reinterpret_cast<Vec<scalar_t, kVec>*>(ptr + start) = v;
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e)
          if (start + e < plane) ptr[start + e] = static_cast<scalar_t>(in[j * kVec + e]);
      }
    }
  }
};

// What both kernels know about their block's plane.
template <typename scalar_t>
struct PlaneContext {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int kItemsPerThread = kItems<scalar_t>;
  TileLayout<scalar_t> tiles;
  int64_t index;  // n * C + c
  int64_t offset;  // of the plane's first element in x, y, grad_y, grad_x
  const scalar_t* x;
  const scalar_t* noise;
  acc_t noise_weight, slope, first;  // first: h[0], the shift of every statistic
  int tile;                          // elements per tile

  __device__ PlaneContext(const AdainParams& p, bool vectorized) {
    index = blockIdx.x;
    tiles = {static_cast<int>(p.plane), vectorized};
    offset = index * p.plane;
    x = static_cast<const scalar_t*>(p.x) + offset;
    noise = static_cast<const scalar_t*>(p.noise) + (index / p.channels) * p.noise_batch_stride;
    noise_weight = static_cast<acc_t>(static_cast<const scalar_t*>(p.noise_weight)[index % p.channels]);
    slope = static_cast<acc_t>(p.negative_slope);
    first = leaky_relu(pre_activation<acc_t>(static_cast<acc_t>(x[0]), noise_weight, static_cast<acc_t>(noise[0])),
                       slope);
    tile = int(blockDim.x) * kItemsPerThread;
  }

  // The pre-activations x + w * noise of this thread's elements of a tile (0 past the plane's end).
  __device__ void load_pre(int base, acc_t* pre) const {
    acc_t noise_values[kItemsPerThread];
    tiles.load(x, base, pre);
    tiles.load(noise, base, noise_values);
#pragma unroll
    for (int k = 0; k < kItemsPerThread; ++k) pre[k] = pre_activation(pre[k], noise_weight, noise_values[k]);
  }

  __device__ acc_t shifted(acc_t pre) const { return leaky_relu(pre, slope) - first; }
};

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxThreads) adain_forward_kernel(AdainParams p, bool vectorized) {
  using Plane = PlaneContext<scalar_t>;
  using acc_t = typename Plane::acc_t;
  constexpr int kN = Plane::kItemsPerThread;
  const Plane plane(p, vectorized);
  acc_t s[kN];  // shifted h of this thread's elements of the current tile
  Fields<acc_t, 3> moments{{0, 0, 0}};
  for (int base = 0; base < plane.tiles.plane; base += plane.tile) {
    plane.load_pre(base, s);
    acc_t count = 0, sum = 0;
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      s[k] = plane.tiles.valid(base, k) ? plane.shifted(s[k]) : acc_t(0);
      count += plane.tiles.valid(base, k) ? acc_t(1) : acc_t(0);
      sum += s[k];
    }
    if (count > acc_t(0)) {
      const acc_t mean = sum / count;
      acc_t m2 = 0;
#pragma unroll
      for (int k = 0; k < kN; ++k) m2 += plane.tiles.valid(base, k) ? (s[k] - mean) * (s[k] - mean) : acc_t(0);
      moments = ChanMerge<acc_t>()(moments, {{count, mean, m2}});
    }
  }
  moments = block_reduce(moments, Fields<acc_t, 3>{{0, 0, 0}}, ChanMerge<acc_t>());
  const acc_t mean = moments.v[1];
  const acc_t rstd = acc_t(1) / sqrt(moments.v[2] / acc_t(plane.tiles.plane) + static_cast<acc_t>(p.eps));
  if (threadIdx.x == 0) {
    static_cast<acc_t*>(p.mean)[plane.index] = mean;
    static_cast<acc_t*>(p.rstd)[plane.index] = rstd;
  }
  const acc_t scale = static_cast<acc_t>(static_cast<const scalar_t*>(p.gamma)[plane.index]) * rstd;
  const acc_t offset = static_cast<acc_t>(static_cast<const scalar_t*>(p.beta)[plane.index]) - scale * mean;
  scalar_t* y = static_cast<scalar_t*>(p.y) + plane.offset;
  const bool in_registers = plane.tiles.plane <= plane.tile;
  for (int base = 0; base < plane.tiles.plane; base += plane.tile) {
    if (!in_registers) {
      plane.load_pre(base, s);
#pragma unroll
      for (int k = 0; k < kN; ++k) s[k] = plane.shifted(s[k]);
    }
#pragma unroll
    for (int k = 0; k < kN; ++k) s[k] = scale * s[k] + offset;
    plane.tiles.store(y, base, s);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMaxThreads) adain_backward_kernel(AdainParams p, bool vectorized) {
  using Plane = PlaneContext<scalar_t>;
  using acc_t = typename Plane::acc_t;
  constexpr int kN = Plane::kItemsPerThread;
  const Plane plane(p, vectorized);
  const acc_t mean = static_cast<const acc_t*>(p.mean)[plane.index];
  const acc_t rstd = static_cast<const acc_t*>(p.rstd)[plane.index];
  const auto xhat = [&](acc_t pre) { return (plane.shifted(pre) - mean) * rstd; };
  const scalar_t* grad_y = static_cast<const scalar_t*>(p.grad_y) + plane.offset;
  acc_t pre[kN], grad[kN];  // grad: of y, then of pre (0 past the plane's end, so the sums need no mask)
  Fields<acc_t, 2> sums{{0, 0}};  // sum(grad_y), sum(grad_y * xhat)
  for (int base = 0; base < plane.tiles.plane; base += plane.tile) {
    plane.load_pre(base, pre);
    plane.tiles.load(grad_y, base, grad);
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      sums.v[0] += grad[k];
      sums.v[1] += grad[k] * xhat(pre[k]);
    }
  }
  sums = block_reduce(sums, Fields<acc_t, 2>{{0, 0}}, Sum<acc_t>());
  const acc_t elements = static_cast<acc_t>(plane.tiles.plane);
  const acc_t scale = static_cast<acc_t>(static_cast<const scalar_t*>(p.gamma)[plane.index]) * rstd;
  const acc_t mean_grad = sums.v[0] / elements, mean_grad_xhat = sums.v[1] / elements;
  scalar_t* grad_x = static_cast<scalar_t*>(p.grad_x) + plane.offset;
  const bool in_registers = plane.tiles.plane <= plane.tile;
  Fields<acc_t, 1> noise_sum{{0}};  // sum(grad_pre * noise)
  for (int base = 0; base < plane.tiles.plane; base += plane.tile) {
    if (!in_registers) {
      plane.load_pre(base, pre);
      plane.tiles.load(grad_y, base, grad);
    }
    acc_t noise_values[kN];
    plane.tiles.load(plane.noise, base, noise_values);
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      grad[k] = adain_grad_pre(grad[k], pre[k], xhat(pre[k]), scale, mean_grad, mean_grad_xhat, plane.slope);
      noise_sum.v[0] += grad[k] * noise_values[k];
    }
    plane.tiles.store(grad_x, base, grad);
  }
  noise_sum = block_reduce(noise_sum, Fields<acc_t, 1>{{0}}, Sum<acc_t>());
  if (threadIdx.x == 0) {
    static_cast<acc_t*>(p.grad_beta)[plane.index] = sums.v[0];
    static_cast<acc_t*>(p.grad_gamma)[plane.index] = sums.v[1];
    static_cast<acc_t*>(p.grad_noise_weight)[plane.index] = noise_sum.v[0];
  }
}

// Enough threads for the plane to fit in one tile, up to kMaxThreads.
int threads_for(int64_t plane, int items) {
  const int64_t needed = (plane + items - 1) / items;
  return static_cast<int>(std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (needed + 31) / 32 * 32)));
}

template <typename scalar_t>
void launch(const AdainParams& p, AdainPass pass) {
  const int64_t planes = p.batch * p.channels;
  TORCH_CHECK(planes <= INT_MAX, "adain_noise: at most ", INT_MAX, " planes (N * C) on CUDA, got ", planes);
  TORCH_CHECK(p.plane <= INT_MAX / 2, "adain_noise: at most ", INT_MAX / 2, " elements per plane on CUDA, got ",
              p.plane);
  constexpr int64_t kVecBytes = int64_t(sizeof(scalar_t)) * kVecWidth<scalar_t>;
  bool vectorized = p.plane % kVecWidth<scalar_t> == 0;
  const void* const tensors[] = {p.x, p.noise, p.y, p.grad_y, p.grad_x};  // those a pass does not use are null
  for (const void* ptr : tensors) vectorized = vectorized && aligned_to(ptr, kVecBytes);
  const int threads = threads_for(p.plane, kItems<scalar_t>);
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (pass == AdainPass::kForward)
    adain_forward_kernel<scalar_t><<<static_cast<unsigned>(planes), threads, 0, stream>>>(p, vectorized);
  else
    adain_backward_kernel<scalar_t><<<static_cast<unsigned>(planes), threads, 0, stream>>>(p, vectorized);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void adain_cuda(const AdainParams& p, AdainPass pass, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "adain_cuda", [&] { launch<scalar_t>(p, pass); });
}

}  // namespace stylegan_cuda
