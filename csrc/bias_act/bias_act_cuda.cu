// CUDA kernel of bias_act: a grid-stride elementwise pass with 16-byte loads and stores where alignment allows.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../cuda_utils.cuh"
#include "bias_act.h"

namespace stylegan_cuda {
namespace {

template <typename scalar_t, typename index_t, int VEC, BiasActPass PASS>
__global__ void bias_act_kernel(BiasActParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  using V = Vec<scalar_t, VEC>;
  const auto* in = static_cast<const scalar_t*>(p.in);
  const auto* aux = static_cast<const scalar_t*>(p.aux);
  auto* out = static_cast<scalar_t*>(p.out);
  const acc_t slope = static_cast<acc_t>(p.negative_slope), scale = static_cast<acc_t>(p.scale);
  const index_t numel = p.numel, inner = p.inner, channels = p.channels;
  const index_t stride = index_t(gridDim.x) * blockDim.x * VEC;
  for (index_t i = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) * VEC; i < numel; i += stride) {
    const index_t n = numel - i < VEC ? numel - i : VEC;
    V a, b, r;
    if (n == VEC) {
      a = *reinterpret_cast<const V*>(in + i);
      if (PASS == BiasActPass::kBackward) b = *reinterpret_cast<const V*>(aux + i);
    } else {
      for (index_t k = 0; k < n; ++k) {
        a.v[k] = in[i + k];
        if (PASS == BiasActPass::kBackward) b.v[k] = aux[i + k];
      }
    }
    if (PASS == BiasActPass::kForward && inner % VEC == 0) {  // the VEC elements share one channel
      const acc_t bias = aux ? static_cast<acc_t>(aux[(i / inner) % channels]) : acc_t(0);
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        r.v[k] = static_cast<scalar_t>(scaled_leaky_relu<acc_t>(static_cast<acc_t>(a.v[k]) + bias, slope, scale));
    } else if (PASS == BiasActPass::kForward) {
      const index_t run = i / inner;
      index_t within = i - run * inner;
      index_t c = run % channels;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const acc_t bias = aux ? static_cast<acc_t>(aux[c]) : acc_t(0);
        r.v[k] = static_cast<scalar_t>(scaled_leaky_relu<acc_t>(static_cast<acc_t>(a.v[k]) + bias, slope, scale));
        if (++within == inner) {
          within = 0;
          if (++c == channels) c = 0;
        }
      }
    } else {
#pragma unroll
      for (int k = 0; k < VEC; ++k)
        r.v[k] = static_cast<scalar_t>(
            scaled_leaky_relu_grad<acc_t>(static_cast<acc_t>(a.v[k]), static_cast<acc_t>(b.v[k]), slope, scale));
    }
    if (n == VEC) {
      *reinterpret_cast<V*>(out + i) = r;
    } else {
      for (index_t k = 0; k < n; ++k) out[i + k] = r.v[k];
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
  const bool vectorize = aligned_to(p.in, bytes) && aligned_to(p.out, bytes) &&
                         (pass == BiasActPass::kForward || aligned_to(p.aux, bytes));
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
