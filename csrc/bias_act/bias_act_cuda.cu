// CUDA kernel of bias_act: a grid-stride elementwise pass with 16-byte loads and stores where alignment allows, and
// the sign mask written or read one 32-bit word per 32 elements.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../cuda_utils.cuh"
#include "bias_act.h"

namespace stylegan_cuda {
namespace {

// Each thread moves VEC consecutive elements; the 32 / VEC lanes that cover one mask word OR their bits together.
// Whole warps step through the grid-stride loop together, so that every lane takes part in those shuffles.
template <typename scalar_t, typename index_t, int VEC, BiasActPass PASS>
__global__ void bias_act_kernel(BiasActParams p) {
  static_assert(kBitsPerWord % VEC == 0, "a thread's elements must lie in one mask word");
  constexpr int kLanesPerWord = kBitsPerWord / VEC;
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vec<scalar_t, VEC>;
  const auto* in = static_cast<const scalar_t*>(p.in);
  const auto* bias = static_cast<const scalar_t*>(p.bias);
  auto* out = static_cast<scalar_t*>(p.out);
  const acc_t slope = static_cast<acc_t>(p.negative_slope), scale = static_cast<acc_t>(p.scale);
  const index_t numel = p.numel, inner = p.inner, channels = p.channels;
  const int lane = threadIdx.x % 32;
  const index_t stride = index_t(gridDim.x) * blockDim.x * VEC;
  for (index_t warp_start = (index_t(blockIdx.x) * blockDim.x + threadIdx.x - lane) * VEC; warp_start < numel;
       warp_start += stride) {
    const index_t i = warp_start + lane * VEC;  // i % 32 == (lane * VEC) % 32: warp_start is a multiple of 32 * VEC
    const index_t n = i >= numel ? 0 : (numel - i < VEC ? numel - i : VEC);
    V a, r;
    if (n == VEC) {
      a = *reinterpret_cast<const V*>(in + i);
    } else {  // the tail: predicated, so that a and r stay in registers
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        if (k < n) a.v[k] = in[i + k];
    }
    if (PASS == BiasActPass::kForward) {
      acc_t b[VEC];
      if (inner % VEC == 0) {  // the VEC elements share one channel
        const acc_t shared = bias && n > 0 ? static_cast<acc_t>(bias[(i / inner) % channels]) : acc_t(0);
#pragma unroll
        for (int k = 0; k < VEC; ++k) b[k] = shared;
      } else {
        const index_t run = i / inner;
        index_t within = i - run * inner;
        index_t c = run % channels;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          b[k] = bias && k < n ? static_cast<acc_t>(bias[c]) : acc_t(0);
          if (++within == inner) {
            within = 0;
            if (++c == channels) c = 0;
          }
        }
      }
      uint32_t bits = 0;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t v = static_cast<acc_t>(a.v[k]) + b[k];
        if (k < n && v > acc_t(0)) bits |= 1u << k;
        r.v[k] = static_cast<scalar_t>(scaled_leaky_relu<acc_t>(v, slope, scale));
      }
      bits <<= (lane * VEC) % kBitsPerWord;
#pragma unroll
      for (int offset = 1; offset < kLanesPerWord; offset *= 2) bits |= __shfl_xor_sync(0xffffffffu, bits, offset);
      if (lane % kLanesPerWord == 0 && n > 0) p.positive[i / kBitsPerWord] = bits;
    } else {
      const uint32_t bits = n > 0 ? p.positive[i / kBitsPerWord] >> (i % kBitsPerWord) : 0u;
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        r.v[k] = static_cast<scalar_t>(
            scaled_leaky_relu_grad<acc_t>(static_cast<acc_t>(a.v[k]), (bits >> k) & 1u, slope, scale));
    }
    if (n == VEC) {
      *reinterpret_cast<V*>(out + i) = r;
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        if (k < n) out[i + k] = r.v[k];
    }
  }
}

template <typename scalar_t, typename index_t, int VEC>
void launch(const BiasActParams& p, BiasActPass pass) {
  constexpr int kThreads = 256;
  const int blocks = grid_size((p.numel + VEC - 1) / VEC, kThreads);
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (pass == BiasActPass::kForward)
    bias_act_kernel<scalar_t, index_t, VEC, BiasActPass::kForward><<<blocks, kThreads, 0, stream>>>(p);
  else
    bias_act_kernel<scalar_t, index_t, VEC, BiasActPass::kBackward><<<blocks, kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void dispatch(const BiasActParams& p, BiasActPass pass) {
  constexpr int kVec = kVecWidth<scalar_t>;
  const int64_t bytes = int64_t(sizeof(scalar_t)) * kVec;
  const bool vectorize = aligned_to(p.in, bytes) && aligned_to(p.out, bytes);
  // 32-bit indices while i + stride cannot overflow them.
  const bool small = p.numel < (int64_t(1) << 30);
  if (vectorize && small) launch<scalar_t, int32_t, kVec>(p, pass);
  else if (vectorize) launch<scalar_t, int64_t, kVec>(p, pass);
  else if (small) launch<scalar_t, int32_t, 1>(p, pass);
  else launch<scalar_t, int64_t, 1>(p, pass);
}

}  // namespace

void bias_act_cuda(const BiasActParams& p, BiasActPass pass, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "bias_act_cuda", [&] { dispatch<scalar_t>(p, pass); });
}

}  // namespace stylegan_cuda
