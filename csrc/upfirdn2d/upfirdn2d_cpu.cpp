// CPU kernel of upfirdn2d: direct polyphase loops that never touch the inserted zeros, parallel over planes and
// blocks of rows (or rows of channels_last images); every inner loop is a unit-stride multiply-add that vectorizes.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "../cpu_convert.h"
#include "upfirdn2d.h"

namespace stylegan_cuda {
namespace {

// The weights in window order (what the loops correlate with), in the accumulation type.
template <typename acc_t>
std::vector<acc_t> window_weights(const Upfirdn2dParams& p) {
  const auto* kernel = static_cast<const acc_t*>(p.kernel);
  std::vector<acc_t> w(p.kernel_h * p.kernel_w);
  for (int i = 0; i < p.kernel_h; ++i)
    for (int j = 0; j < p.kernel_w; ++j)
      w[i * p.kernel_w + j] = kernel[kernel_index(i, j, p.kernel_h, p.kernel_w, p.flip_kernel)];
  return w;
}

int max_taps(int k, int up) { return (k + up - 1) / up; }

// dst[k] = src[k * stride]; the common strides 1 and 2 spelled out so that they vectorize.
template <typename acc_t, typename scalar_t>
SGC_CPU_CLONES void gather_strided(acc_t* __restrict__ dst, const scalar_t* __restrict__ src, int64_t len,
                                   int64_t stride) {
  if (stride == 1) {
    for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<acc_t>(src[k]);
  } else if (stride == 2) {
    for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<acc_t>(src[2 * k]);
  } else {
    for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<acc_t>(src[k * stride]);
  }
}

// dst[r + phases * m] = acc[r * class_stride + m]: the per-class accumulators interleaved back into an output row.
template <typename scalar_t, typename acc_t>
SGC_CPU_CLONES void interleave(scalar_t* __restrict__ dst, const acc_t* __restrict__ acc, int64_t out_w,
                               int64_t phases, int64_t class_stride) {
  if (phases == 1) {
    for (int64_t m = 0; m < out_w; ++m) dst[m] = static_cast<scalar_t>(acc[m]);
    return;
  }
  if (phases == 2) {
    for (int64_t m = 0; m < out_w / 2; ++m) {
      dst[2 * m] = static_cast<scalar_t>(acc[m]);
      dst[2 * m + 1] = static_cast<scalar_t>(acc[class_stride + m]);
    }
    if (out_w % 2) dst[out_w - 1] = static_cast<scalar_t>(acc[out_w / 2]);
    return;
  }
  for (int64_t r = 0; r < phases; ++r)
    for (int64_t m = 0; m < (out_w - r + phases - 1) / phases; ++m)
      dst[r + m * phases] = static_cast<scalar_t>(acc[r * class_stride + m]);
}

// One weighted input row of a tap sum.
template <typename acc_t>
struct RowTap {
  acc_t weight;
  const acc_t* row;
};

constexpr int kMaxFusedTaps = 16;

// out[j] (+)= sum of weight * row[j] over N taps, in one pass: every output is loaded and stored once.
template <typename acc_t, int N, bool ACCUMULATE>
C10_ALWAYS_INLINE void sum_taps(acc_t* __restrict__ out, const RowTap<acc_t>* taps, int64_t len) {
  acc_t w[N];
  const acc_t* __restrict__ in[N];
  for (int t = 0; t < N; ++t) w[t] = taps[t].weight, in[t] = taps[t].row;
  for (int64_t j = 0; j < len; ++j) {
    acc_t sum = ACCUMULATE ? out[j] : acc_t(0);
#pragma GCC unroll 16
    for (int t = 0; t < N; ++t) sum += w[t] * in[t][j];
    out[j] = sum;
  }
}

// sum_taps with N = count (1 to kMaxFusedTaps) chosen at run time.
template <typename acc_t, bool ACCUMULATE, int N = 1>
C10_ALWAYS_INLINE void sum_taps_of(acc_t* out, const RowTap<acc_t>* taps, int count, int64_t len) {
  if constexpr (N < kMaxFusedTaps) {
    if (count != N) return sum_taps_of<acc_t, ACCUMULATE, N + 1>(out, taps, count, len);
  }
  sum_taps<acc_t, N, ACCUMULATE>(out, taps, len);
}

// out[j] = sum of weight * row[j] over all `count` taps, kMaxFusedTaps at a time.
template <typename acc_t>
SGC_CPU_CLONES void sum_all_taps(acc_t* out, const RowTap<acc_t>* taps, int count, int64_t len) {
  if (count == 0) std::fill(out, out + len, acc_t(0));
  for (int first = 0; first < count; first += kMaxFusedTaps) {
    const int n = std::min(kMaxFusedTaps, count - first);
    if (first == 0) sum_taps_of<acc_t, false>(out, taps, n, len);
    else sum_taps_of<acc_t, true>(out, taps + first, n, len);
  }
}

// NCHW. Along x the output columns fall into `phases` classes, ox = r + phases * m; within a class every column has
// the same taps, shifted by `stride` input columns per step of m. Input rows are converted to acc_t into a zero-padded
// row split into `stride` interleaved phase rows, and the outputs are kept per class, so that a class's row of
// outputs is a sum of unit-stride weighted input rows, one per tap, taken in one pass (sum_all_taps). Small planes
// are taken `group` at a time, side by side in segments of `seg` elements, so that these rows run over the whole
// group: positions past a plane's own outputs compute ignored values.
template <typename scalar_t>
void upfirdn2d_planes(const Upfirdn2dParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(p.x);
  auto* out = static_cast<scalar_t*>(p.out);
  const std::vector<acc_t> weights = window_weights<acc_t>(p);
  const int kh = p.kernel_h, kw = p.kernel_w;
  const int64_t H = p.in_h, W = p.in_w, out_h = p.out_h, out_w = p.out_w, planes = p.batch * p.channels;
  const int64_t threads = at::get_num_threads();

  const int g = std::gcd(p.up_x, p.down_x);
  const int64_t phases = std::min<int64_t>(p.up_x / g, out_w), stride = p.down_x / g;
  // The padded row: input columns col_lo .. col_lo + padded_w - 1, zero outside 0 .. W - 1.
  const int64_t col_lo = axis_taps(0, p.up_x, p.down_x, p.pad_x0, kw).first;
  const int64_t padded_w = axis_taps(out_w - 1, p.up_x, p.down_x, p.pad_x0, kw).first + max_taps(kw, p.up_x) - col_lo;
  const int64_t seg = std::max((out_w + phases - 1) / phases, (padded_w + stride - 1) / stride);
  const int64_t group = std::clamp<int64_t>(std::min(256 / seg, planes / (4 * threads)), 1, planes);
  const int64_t lane = group * seg;  // one phase row, or one class of accumulators, of the whole group
  // Phase rows past the padded width would stay empty (a `down` wider than the row): only the others are kept.
  const int64_t row_len = std::min(stride, padded_w) * lane;
  // Position pos = ix - col_lo of a plane's padded row sits in phase row pos % stride, at pos / stride.
  auto slab_offset = [&](int64_t pos) { return (pos % stride) * lane + pos / stride; };
  // Per class of output columns its taps: (weight index within a kernel row, offset in a slab row).
  struct ColumnTap {
    int weight;
    int64_t offset;
  };
  std::vector<std::vector<ColumnTap>> class_taps(phases);
  for (int64_t r = 0; r < phases; ++r) {
    const AxisTaps tx = axis_taps(r, p.up_x, p.down_x, p.pad_x0, kw);
    for (int s = 0; s < tx.count; ++s)
      class_taps[r].push_back({tx.offset + s * p.up_x, slab_offset(tx.first - col_lo + s)});
  }

  // Tasks: a group of planes times a block of output rows (whole planes when grouped).
  const int64_t groups = (planes + group - 1) / group;
  const int64_t rows_cap = group > 1 ? out_h : std::max<int64_t>(1, std::min<int64_t>(out_h, 32768 / out_w));
  const int64_t rows_per_task = std::clamp<int64_t>((groups * out_h + 4 * threads - 1) / (4 * threads), 1, rows_cap);
  const int64_t blocks = (out_h + rows_per_task - 1) / rows_per_task;
  const int64_t task_work = group * rows_per_task * out_w * kh * kw / (p.up_x * p.up_y);
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, task_work));

  at::parallel_for(0, groups * blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> slab, acc(phases * lane);
    std::vector<acc_t> row_in(kStagedInRuns<scalar_t> ? W : 0), row_out(kStagedInRuns<scalar_t> ? out_w : 0);
    std::vector<RowTap<acc_t>> taps;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t plane_lo = task / blocks * group, plane_count = std::min(group, planes - plane_lo);
      const int64_t oy_begin = (task % blocks) * rows_per_task, oy_end = std::min(out_h, oy_begin + rows_per_task);
      const int64_t row_lo = std::max<int64_t>(0, axis_taps(oy_begin, p.up_y, p.down_y, p.pad_y0, kh).first);
      const int64_t row_hi = std::min<int64_t>(
          H, axis_taps(oy_end - 1, p.up_y, p.down_y, p.pad_y0, kh).first + max_taps(kh, p.up_y));
      // `seg` of slack at the end: the ignored positions of the last plane read past its segment.
      slab.assign(std::max<int64_t>(0, row_hi - row_lo) * row_len + seg, acc_t(0));
      const int64_t ix_lo = std::max<int64_t>(0, col_lo), ix_hi = std::min(W, col_lo + padded_w);
      for (int64_t k = 0; k < plane_count; ++k) {
        for (int64_t iy = row_lo; iy < row_hi; ++iy) {
          const run_t<scalar_t>* src =
              readable_run(x + ((plane_lo + k) * H + iy) * W + ix_lo, row_in.data(), ix_hi - ix_lo);
          acc_t* dst = slab.data() + (iy - row_lo) * row_len + k * seg;
          for (int64_t q = 0; q < std::min(stride, ix_hi - ix_lo); ++q)
            gather_strided(dst + slab_offset(ix_lo - col_lo + q), src + q, (ix_hi - ix_lo - q + stride - 1) / stride,
                           stride);
        }
      }
      const int64_t len = plane_count * seg;
      for (int64_t oy = oy_begin; oy < oy_end; ++oy) {
        const AxisTaps ty = axis_taps(oy, p.up_y, p.down_y, p.pad_y0, kh);
        for (int64_t r = 0; r < phases; ++r) {
          taps.clear();
          for (int t = 0; t < ty.count; ++t) {
            const int64_t iy = ty.first + t;
            if (iy < 0 || iy >= H) continue;
            const acc_t* wrow = weights.data() + (ty.offset + t * p.up_y) * kw;
            const acc_t* srow = slab.data() + (iy - row_lo) * row_len;
            for (const ColumnTap& tap : class_taps[r]) taps.push_back({wrow[tap.weight], srow + tap.offset});
          }
          sum_all_taps(acc.data() + r * lane, taps.data(), static_cast<int>(taps.size()), len);
        }
        for (int64_t k = 0; k < plane_count; ++k) {
          scalar_t* dst = out + ((plane_lo + k) * out_h + oy) * out_w;
          run_t<scalar_t>* row = writable_run(dst, row_out.data());
          interleave(row, acc.data() + k * seg, out_w, phases, lane);
          finish_run(row, dst, out_w);
        }
      }
    }
  });
}

// channels_last: every tap is one unit-stride multiply-add over the channels of a pixel.
// Output rows [begin, end) (a row being (n, oy)); parameters by value, so that the loops see locals.
template <typename scalar_t>
SGC_CPU_CLONES void channels_last_rows(const Upfirdn2dParams p, const at::opmath_type<scalar_t>* weights,
                                       const int64_t begin, const int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(p.x);
  auto* out = static_cast<scalar_t*>(p.out);
  const int kw = p.kernel_w;
  const int64_t C = p.channels, H = p.in_h, W = p.in_w, out_h = p.out_h, out_w = p.out_w;
  std::vector<acc_t> acc(C), pixel(kStagedInRuns<scalar_t> ? C : 0);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t n = row / out_h, oy = row % out_h;
    const AxisTaps ty = axis_taps(oy, p.up_y, p.down_y, p.pad_y0, p.kernel_h);
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const AxisTaps tx = axis_taps(ox, p.up_x, p.down_x, p.pad_x0, kw);
      acc_t* __restrict__ a = acc.data();
      std::fill(a, a + C, acc_t(0));
      for (int t = 0; t < ty.count; ++t) {
        const int64_t iy = ty.first + t;
        if (iy < 0 || iy >= H) continue;
        const acc_t* wrow = weights + (ty.offset + t * p.up_y) * kw;
        for (int s = 0; s < tx.count; ++s) {
          const int64_t ix = tx.first + s;
          if (ix < 0 || ix >= W) continue;
          const acc_t w = wrow[tx.offset + s * p.up_x];
          const run_t<scalar_t>* __restrict__ in = readable_run(x + ((n * H + iy) * W + ix) * C, pixel.data(), C);
          for (int64_t c = 0; c < C; ++c) a[c] += w * static_cast<acc_t>(in[c]);
        }
      }
      convert_run(a, out + (row * out_w + ox) * C, C);
    }
  }
}

template <typename scalar_t>
void upfirdn2d_channels_last(const Upfirdn2dParams& p) {
  const auto weights = window_weights<at::opmath_type<scalar_t>>(p);
  const int64_t row_work = p.out_w * p.channels * p.kernel_h * p.kernel_w / (p.up_x * p.up_y);
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, row_work));
  at::parallel_for(0, p.batch * p.out_h, grain, [&](int64_t begin, int64_t end) {
    channels_last_rows<scalar_t>(p, weights.data(), begin, end);
  });
}

}  // namespace

void upfirdn2d_cpu(const Upfirdn2dParams& p, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "upfirdn2d_cpu", [&] {
    if (p.channels_last) upfirdn2d_channels_last<scalar_t>(p);
    else upfirdn2d_planes<scalar_t>(p);
  });
}

}  // namespace stylegan_cuda
