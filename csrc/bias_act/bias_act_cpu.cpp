// CPU kernel of bias_act: parallel over blocks of the tensor, inner loops plain enough for the compiler to vectorize.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "bias_act.h"

namespace stylegan_cuda {
namespace {

template <typename scalar_t>
void forward(const BiasActParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto* __restrict__ x = static_cast<const scalar_t*>(p.in);
  const auto* __restrict__ bias = static_cast<const scalar_t*>(p.aux);
  auto* __restrict__ y = static_cast<scalar_t*>(p.out);
  const acc_t slope = static_cast<acc_t>(p.negative_slope), scale = static_cast<acc_t>(p.scale);
  const int64_t C = p.channels;
  if (p.inner == 1) {  // channels innermost (channels_last, or rank 2): rows of C elements
    std::vector<acc_t> b(C, acc_t(0));
    if (bias) std::copy(bias, bias + C, b.begin());
    const acc_t* __restrict__ bp = b.data();
    at::parallel_for(0, p.numel / C, std::max<int64_t>(1, at::internal::GRAIN_SIZE / C), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const scalar_t* __restrict__ xr = x + r * C;
        scalar_t* __restrict__ yr = y + r * C;
        for (int64_t c = 0; c < C; ++c)
          yr[c] = static_cast<scalar_t>(scaled_leaky_relu<acc_t>(static_cast<acc_t>(xr[c]) + bp[c], slope, scale));
      }
    });
  } else {  // runs of `inner` elements that share one channel
    const int64_t n = p.inner;
    at::parallel_for(0, p.numel / n, std::max<int64_t>(1, at::internal::GRAIN_SIZE / n), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const acc_t b = bias ? static_cast<acc_t>(bias[r % C]) : acc_t(0);
        const scalar_t* __restrict__ xr = x + r * n;
        scalar_t* __restrict__ yr = y + r * n;
        for (int64_t j = 0; j < n; ++j)
          yr[j] = static_cast<scalar_t>(scaled_leaky_relu<acc_t>(static_cast<acc_t>(xr[j]) + b, slope, scale));
      }
    });
  }
}

template <typename scalar_t>
void backward(const BiasActParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto* __restrict__ grad = static_cast<const scalar_t*>(p.in);
  const auto* __restrict__ y = static_cast<const scalar_t*>(p.aux);
  auto* __restrict__ grad_x = static_cast<scalar_t*>(p.out);
  const acc_t slope = static_cast<acc_t>(p.negative_slope), scale = static_cast<acc_t>(p.scale);
  at::parallel_for(0, p.numel, at::internal::GRAIN_SIZE, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      grad_x[i] = static_cast<scalar_t>(
          scaled_leaky_relu_grad<acc_t>(static_cast<acc_t>(grad[i]), static_cast<acc_t>(y[i]), slope, scale));
  });
}

}  // namespace

void bias_act_cpu(const BiasActParams& p, BiasActPass pass, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "bias_act_cpu", [&] {
    if (pass == BiasActPass::kForward) forward<scalar_t>(p);
    else backward<scalar_t>(p);
  });
}

}  // namespace stylegan_cuda
