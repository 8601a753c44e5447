// CPU kernel of adain_noise: parallel over planes (contiguous) or over (sample, block of channels) (channels_last).
// Each task makes three passes over data that stays in cache for the generator's planes: the mean of
// s = h - h[0], the sum of squared deviations from it (exact two-pass statistics), then the output. The inner loops
// are plain enough for the compiler to vectorize: along the plane in lanes (contiguous) or along the channels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>
#include <vector>

#include "../cpu_convert.h"
#include "adain.h"

namespace stylegan_cuda {
namespace {

// Channels handled together by one channels_last task: one row of them is a few cache lines.
constexpr int64_t kChannelBlock = 64;

// Plane sums are totalled in double: a float32 running sum over a 1024x1024 plane loses the gradients' precision.
using sum_t = double;

// {sum of terms[k](i) for i < n} for each k, in one pass. Each sum runs in independent lanes of the op-math type, so
// that the loop vectorizes, over blocks of kTermsPerLane terms a lane; the blocks' lane sums are totalled in sum_t:
// the rounding error does not grow with the plane, and the lanes run at float speed (with double lanes adain_noise
// fwd+bwd took 12-16% longer). Always inlined: compiled for its caller's target (SGC_CPU_CLONES).
template <typename acc_t, typename... Terms, size_t... K>
C10_ALWAYS_INLINE std::array<acc_t, sizeof...(Terms)> lane_sums(int64_t n, std::index_sequence<K...>,
                                                                const Terms&... terms) {
  constexpr int kLanes = 16;
  constexpr int64_t kTermsPerLane = 32;
  std::array<sum_t, sizeof...(Terms)> totals{};
  int64_t i = 0;
  while (i + kLanes <= n) {
    const int64_t block_end = i + std::min(kTermsPerLane * kLanes, (n - i) / kLanes * kLanes);
    acc_t lanes[sizeof...(Terms)][kLanes] = {};
    for (; i < block_end; i += kLanes)
      for (int l = 0; l < kLanes; ++l) ((lanes[K][l] += terms(i + l)), ...);
    for (int l = 0; l < kLanes; ++l) ((totals[K] += lanes[K][l]), ...);
  }
  for (; i < n; ++i) ((totals[K] += terms(i)), ...);
  return {static_cast<acc_t>(totals[K])...};
}

template <typename acc_t, typename... Terms>
C10_ALWAYS_INLINE std::array<acc_t, sizeof...(Terms)> lane_sums(int64_t n, const Terms&... terms) {
  return lane_sums<acc_t>(n, std::index_sequence_for<Terms...>{}, terms...);
}

template <typename acc_t, typename Term>
C10_ALWAYS_INLINE acc_t lane_sum(int64_t n, const Term& term) {
  return lane_sums<acc_t>(n, term)[0];
}

// The tensors of one call with the types of one dtype.
template <typename scalar_t>
struct Tensors {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  const scalar_t* noise;
  const scalar_t* noise_weight;
  const scalar_t* gamma;
  const scalar_t* beta;
  const scalar_t* grad_y;
  acc_t* mean;
  acc_t* rstd;
  scalar_t* y;
  scalar_t* grad_x;
  acc_t* grad_gamma;
  acc_t* grad_beta;
  acc_t* grad_noise_weight;

  explicit Tensors(const AdainParams& p)
      : x(static_cast<const scalar_t*>(p.x)),
        noise(static_cast<const scalar_t*>(p.noise)),
        noise_weight(static_cast<const scalar_t*>(p.noise_weight)),
        gamma(static_cast<const scalar_t*>(p.gamma)),
        beta(static_cast<const scalar_t*>(p.beta)),
        grad_y(static_cast<const scalar_t*>(p.grad_y)),
        mean(static_cast<acc_t*>(p.mean)),
        rstd(static_cast<acc_t*>(p.rstd)),
        y(static_cast<scalar_t*>(p.y)),
        grad_x(static_cast<scalar_t*>(p.grad_x)),
        grad_gamma(static_cast<acc_t*>(p.grad_gamma)),
        grad_beta(static_cast<acc_t*>(p.grad_beta)),
        grad_noise_weight(static_cast<acc_t*>(p.grad_noise_weight)) {}
};

// ---- contiguous planes: one task per (n, c), vectorized along the plane ----

// Planes [lo, hi). The arguments are values, so the loops see locals (not a closure's references) and vectorize.
template <typename scalar_t, AdainPass PASS>
C10_NOINLINE SGC_CPU_CLONES void plane_range(const AdainParams p, const int64_t lo, const int64_t hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tensors<scalar_t> t(p);
  const int64_t C = p.channels, M = p.plane;
  const acc_t slope = static_cast<acc_t>(p.negative_slope), eps = static_cast<acc_t>(p.eps);
  // Half-type planes staged in op-math (cpu_convert.h): x, the noise of the current sample, grad_y, the output.
  std::vector<acc_t> x_run, noise_run, grad_y_run, out_run;
  if (kStagedInRuns<scalar_t>) {
    for (auto* run : {&x_run, &noise_run, &out_run}) run->resize(M);
    if (PASS == AdainPass::kBackward) grad_y_run.resize(M);
  }
  int64_t noise_sample = -1;
  const run_t<scalar_t>* sample_noise = nullptr;
  for (int64_t plane = lo; plane < hi; ++plane) {
    if (plane / C != noise_sample) {  // a sample's planes share its noise: staged once for all of them
      noise_sample = plane / C;
      sample_noise = readable_run(t.noise + noise_sample * p.noise_batch_stride, noise_run.data(), M);
    }
    const run_t<scalar_t>* __restrict__ x = readable_run(t.x + plane * M, x_run.data(), M);
    const run_t<scalar_t>* __restrict__ noise = sample_noise;
    const acc_t w = static_cast<acc_t>(t.noise_weight[plane % C]);
    const auto pre = [&](int64_t i) {
      return pre_activation<acc_t>(static_cast<acc_t>(x[i]), w, static_cast<acc_t>(noise[i]));
    };
    const acc_t first = leaky_relu(pre(0), slope);
    const auto shifted = [&](int64_t i) { return leaky_relu(pre(i), slope) - first; };
    const acc_t gamma = static_cast<acc_t>(t.gamma[plane]);
    if (PASS == AdainPass::kForward) {
      const acc_t mean = lane_sum<acc_t>(M, shifted) / M;
      const acc_t var = lane_sum<acc_t>(M, [&](int64_t i) {
                          const acc_t d = shifted(i) - mean;
                          return d * d;
                        }) / M;
      const acc_t rstd = acc_t(1) / std::sqrt(var + eps);
      const acc_t scale = gamma * rstd, offset = static_cast<acc_t>(t.beta[plane]) - scale * mean;
      run_t<scalar_t>* __restrict__ y = writable_run(t.y + plane * M, out_run.data());
      for (int64_t i = 0; i < M; ++i) y[i] = static_cast<run_t<scalar_t>>(scale * shifted(i) + offset);
      finish_run(y, t.y + plane * M, M);
      t.mean[plane] = mean;
      t.rstd[plane] = rstd;
    } else {
      const run_t<scalar_t>* __restrict__ grad_y = readable_run(t.grad_y + plane * M, grad_y_run.data(), M);
      run_t<scalar_t>* __restrict__ grad_x = writable_run(t.grad_x + plane * M, out_run.data());
      const acc_t mean = t.mean[plane], rstd = t.rstd[plane];
      const auto xhat = [&](acc_t pre_i) { return (leaky_relu(pre_i, slope) - first - mean) * rstd; };
      const auto [sum_grad, sum_grad_xhat] = lane_sums<acc_t>(
          M, [&](int64_t i) { return static_cast<acc_t>(grad_y[i]); },
          [&](int64_t i) { return static_cast<acc_t>(grad_y[i]) * xhat(pre(i)); });
      const acc_t scale = gamma * rstd, mean_grad = sum_grad / M, mean_grad_xhat = sum_grad_xhat / M;
      t.grad_noise_weight[plane] = lane_sum<acc_t>(M, [&](int64_t i) {
        const acc_t pre_i = pre(i);
        const acc_t g = adain_grad_pre<acc_t>(static_cast<acc_t>(grad_y[i]), pre_i, xhat(pre_i), scale, mean_grad,
                                              mean_grad_xhat, slope);
        grad_x[i] = static_cast<run_t<scalar_t>>(g);
        return g * static_cast<acc_t>(noise[i]);
      });
      finish_run(grad_x, t.grad_x + plane * M, M);
      t.grad_gamma[plane] = sum_grad_xhat;
      t.grad_beta[plane] = sum_grad;
    }
  }
}

template <typename scalar_t, AdainPass PASS>
void contiguous_planes(const AdainParams& p) {
  at::parallel_for(0, p.batch * p.channels, std::max<int64_t>(1, at::internal::GRAIN_SIZE / p.plane),
                   [&](int64_t lo, int64_t hi) { plane_range<scalar_t, PASS>(p, lo, hi); });
}

// ---- channels_last: one task per (n, block of channels), vectorized along the channels ----

// Tasks [lo, hi), a task being (sample, block of channels); arguments by value, as plane_range's.
template <typename scalar_t, AdainPass PASS>
C10_NOINLINE SGC_CPU_CLONES void channel_block_range(const AdainParams p, const int64_t lo, const int64_t hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tensors<scalar_t> t(p);
  const int64_t C = p.channels, M = p.plane, blocks = (C + kChannelBlock - 1) / kChannelBlock;
  const acc_t slope = static_cast<acc_t>(p.negative_slope), eps = static_cast<acc_t>(p.eps);
  // Per channel of the block: noise weight, h[0], statistics, the two sums of a pass, y = scale * s + offset.
  acc_t w[kChannelBlock], first[kChannelBlock], mean[kChannelBlock], rstd[kChannelBlock];
  acc_t scale[kChannelBlock], offset[kChannelBlock];
  sum_t sum_a[kChannelBlock], sum_b[kChannelBlock];
  acc_t x_run[kChannelBlock], grad_y_run[kChannelBlock], out_run[kChannelBlock];  // staged rows (half types)
  for (int64_t task = lo; task < hi; ++task) {
    const int64_t n = task / blocks, c0 = (task % blocks) * kChannelBlock, width = std::min(kChannelBlock, C - c0);
    const int64_t row0 = n * M;  // the row of (n, pixel 0); a row holds C channels
    const scalar_t* __restrict__ noise = t.noise + n * p.noise_batch_stride;
    const auto row = [&](auto* base, int64_t i) { return base + (row0 + i) * C + c0; };
    for (int64_t c = 0; c < width; ++c) {
      w[c] = static_cast<acc_t>(t.noise_weight[c0 + c]);
      first[c] = leaky_relu(pre_activation<acc_t>(static_cast<acc_t>(row(t.x, 0)[c]), w[c],
                                                  static_cast<acc_t>(noise[0])), slope);
      sum_a[c] = sum_b[c] = sum_t(0);
    }
    // Calls visit(i, c, pre, grad_y_row, out_row) for every element of the task, rows outermost: grad_y_row is row i
    // of `grad_y`, out_row where row i of `out` is written (each nullptr when not asked for). Half-type rows are
    // staged in op-math (cpu_convert.h).
    const auto for_each = [&](const auto& visit, const scalar_t* grad_y, scalar_t* out) {
      for (int64_t i = 0; i < M; ++i) {
        const run_t<scalar_t>* __restrict__ x = readable_run(row(t.x, i), x_run, width);
        const run_t<scalar_t>* __restrict__ grad_y_row = grad_y ? readable_run(row(grad_y, i), grad_y_run, width)
                                                                : nullptr;
        run_t<scalar_t>* __restrict__ out_row = out ? writable_run(row(out, i), out_run) : nullptr;
        const acc_t noise_i = static_cast<acc_t>(noise[i]);
        for (int64_t c = 0; c < width; ++c)
          visit(i, c, pre_activation<acc_t>(static_cast<acc_t>(x[c]), w[c], noise_i), grad_y_row, out_row);
        if (out) finish_run(out_row, row(out, i), width);
      }
    };
    const int64_t plane0 = n * C + c0;  // index of the block's first (n, c) in the [N, C] tensors
    if (PASS == AdainPass::kForward) {
      for_each([&](int64_t, int64_t c, acc_t pre, auto, auto) { sum_a[c] += leaky_relu(pre, slope) - first[c]; },
               nullptr, nullptr);
      for (int64_t c = 0; c < width; ++c) mean[c] = sum_a[c] / M;
      for_each(
          [&](int64_t, int64_t c, acc_t pre, auto, auto) {
            const acc_t d = leaky_relu(pre, slope) - first[c] - mean[c];
            sum_b[c] += d * d;
          },
          nullptr, nullptr);
      for (int64_t c = 0; c < width; ++c) {
        rstd[c] = acc_t(1) / std::sqrt(sum_b[c] / M + eps);
        t.mean[plane0 + c] = mean[c];
        t.rstd[plane0 + c] = rstd[c];
        scale[c] = static_cast<acc_t>(t.gamma[plane0 + c]) * rstd[c];
        offset[c] = static_cast<acc_t>(t.beta[plane0 + c]) - scale[c] * mean[c];
      }
      for_each(
          [&](int64_t, int64_t c, acc_t pre, auto, run_t<scalar_t>* y) {
            y[c] = static_cast<run_t<scalar_t>>(scale[c] * (leaky_relu(pre, slope) - first[c]) + offset[c]);
          },
          nullptr, t.y);
    } else {
      for (int64_t c = 0; c < width; ++c) {
        mean[c] = t.mean[plane0 + c];
        rstd[c] = t.rstd[plane0 + c];
      }
      const auto xhat = [&](int64_t c, acc_t pre) { return (leaky_relu(pre, slope) - first[c] - mean[c]) * rstd[c]; };
      for_each(
          [&](int64_t, int64_t c, acc_t pre, const run_t<scalar_t>* grad_y, auto) {
            const acc_t g = static_cast<acc_t>(grad_y[c]);
            sum_a[c] += g;
            sum_b[c] += g * xhat(c, pre);
          },
          t.grad_y, nullptr);
      acc_t mean_grad[kChannelBlock], mean_grad_xhat[kChannelBlock];
      sum_t noise_sum[kChannelBlock];
      for (int64_t c = 0; c < width; ++c) {
        t.grad_beta[plane0 + c] = sum_a[c];
        t.grad_gamma[plane0 + c] = sum_b[c];
        scale[c] = static_cast<acc_t>(t.gamma[plane0 + c]) * rstd[c];
        mean_grad[c] = sum_a[c] / M;
        mean_grad_xhat[c] = sum_b[c] / M;
        noise_sum[c] = sum_t(0);
      }
      for_each(
          [&](int64_t i, int64_t c, acc_t pre, const run_t<scalar_t>* grad_y, run_t<scalar_t>* grad_x) {
            const acc_t g = adain_grad_pre<acc_t>(static_cast<acc_t>(grad_y[c]), pre, xhat(c, pre), scale[c],
                                                  mean_grad[c], mean_grad_xhat[c], slope);
            grad_x[c] = static_cast<run_t<scalar_t>>(g);
            noise_sum[c] += g * static_cast<acc_t>(noise[i]);
          },
          t.grad_y, t.grad_x);
      for (int64_t c = 0; c < width; ++c) t.grad_noise_weight[plane0 + c] = noise_sum[c];
    }
  }
}

template <typename scalar_t, AdainPass PASS>
void channels_last_blocks(const AdainParams& p) {
  const int64_t blocks = (p.channels + kChannelBlock - 1) / kChannelBlock;
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / (p.plane * kChannelBlock));
  at::parallel_for(0, p.batch * blocks, grain,
                   [&](int64_t lo, int64_t hi) { channel_block_range<scalar_t, PASS>(p, lo, hi); });
}

}  // namespace

void adain_cpu(const AdainParams& p, AdainPass pass, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "adain_cpu", [&] {
    if (p.channels_last) {
      if (pass == AdainPass::kForward) channels_last_blocks<scalar_t, AdainPass::kForward>(p);
      else channels_last_blocks<scalar_t, AdainPass::kBackward>(p);
    } else {
      if (pass == AdainPass::kForward) contiguous_planes<scalar_t, AdainPass::kForward>(p);
      else contiguous_planes<scalar_t, AdainPass::kBackward>(p);
    }
  });
}

}  // namespace stylegan_cuda
