// CPU kernel of bias_act: parallel over the 32-element words of the sign mask, each word's loops plain enough for
// the compiler to vectorize.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <vector>

#include "../cpu_convert.h"
#include "bias_act.h"

namespace stylegan_cuda {
namespace {

constexpr int64_t kGrainWords = 1024;

// The bias of each of the 32 elements of a word, walked word by word without a division per element.
template <typename acc_t, typename scalar_t>
class WordBias {
 public:
  // Where a word starts: the offset within its run of `inner` elements, and the run's channel; whether the scratch
  // already holds the bias of a word that lies in one channel.
  struct Cursor {
    int64_t within, channel;
    bool scratch_filled = false;
  };

  WordBias(const scalar_t* bias, int64_t channels, int64_t inner) : channels_(channels), inner_(inner) {
    zeros_.fill(acc_t(0));
    if (bias == nullptr) return;
    // channels innermost: a word's channels are consecutive, wrapping around; read them off a repeated copy.
    const int64_t n = inner == 1 ? channels + kBitsPerWord : channels;
    values_.resize(n);
    for (int64_t i = 0; i < n; ++i) values_[i] = static_cast<acc_t>(bias[i % channels]);
  }

  Cursor at(int64_t element) const {
    const int64_t run = element / inner_;
    return {element - run * inner_, run % channels_, false};
  }

  // The bias of the 32 elements from `word` on (in `scratch` or in the repeated copy); moves `word` to the next word.
  const acc_t* next(Cursor& word, acc_t* scratch) const {
    if (values_.empty()) return zeros_.data();
    if (inner_ == 1) {
      const acc_t* run = values_.data() + word.channel;
      word.channel += kBitsPerWord;
      if (word.channel >= channels_) word.channel %= channels_;
      return run;
    }
    if (inner_ % kBitsPerWord == 0) {  // the whole word in one channel: the scratch filled once per run
      if (!word.scratch_filled) {
        for (int k = 0; k < kBitsPerWord; ++k) scratch[k] = values_[word.channel];
        word.scratch_filled = true;
      }
      word.within += kBitsPerWord;
      if (word.within == inner_) {
        advance_channel(word);
        word.scratch_filled = false;
      }
      return scratch;
    }
    for (int k = 0; k < kBitsPerWord; ++k) {
      scratch[k] = values_[word.channel];
      if (++word.within == inner_) advance_channel(word);
    }
    return scratch;
  }

 private:
  void advance_channel(Cursor& word) const {
    word.within = 0;
    if (++word.channel == channels_) word.channel = 0;
  }

  std::vector<acc_t> values_;
  std::array<acc_t, kBitsPerWord> zeros_;
  int64_t channels_, inner_;
};

// One word of the forward pass: `len` (32 but for the last word) elements and their sign bits.
template <typename scalar_t, typename acc_t>
inline __attribute__((always_inline)) uint32_t forward_word(const scalar_t* __restrict__ x,
                                                            const acc_t* __restrict__ bias, scalar_t* __restrict__ y,
                                                            int len, acc_t slope, acc_t scale) {
  acc_t x_run[kBitsPerWord], y_run[kBitsPerWord];
  const run_t<scalar_t>* __restrict__ in = readable_run(x, x_run, len);
  run_t<scalar_t>* __restrict__ out = writable_run(y, y_run);
  uint32_t positive[kBitsPerWord];
  for (int k = 0; k < len; ++k) {
    const acc_t v = static_cast<acc_t>(in[k]) + bias[k];
    positive[k] = v > acc_t(0);
    out[k] = static_cast<run_t<scalar_t>>(scaled_leaky_relu<acc_t>(v, slope, scale));
  }
  finish_run(out, y, len);
  uint32_t bits = 0;
  for (int k = 0; k < len; ++k) bits |= positive[k] << k;
  return bits;
}

// One word of the backward pass; with SUM, its grad_x is also added into `lanes` (one running sum per position).
template <bool SUM, typename scalar_t, typename acc_t>
inline __attribute__((always_inline)) void backward_word(const scalar_t* __restrict__ grad, uint32_t bits,
                                                         scalar_t* __restrict__ grad_x, acc_t* __restrict__ lanes,
                                                         int len, acc_t slope, acc_t scale) {
  acc_t grad_run[kBitsPerWord], grad_x_run[kBitsPerWord];
  const run_t<scalar_t>* __restrict__ in = readable_run(grad, grad_run, len);
  run_t<scalar_t>* __restrict__ out = writable_run(grad_x, grad_x_run);
  for (int k = 0; k < len; ++k) {
    const acc_t g = scaled_leaky_relu_grad<acc_t>(static_cast<acc_t>(in[k]), (bits >> k) & 1u, slope, scale);
    out[k] = static_cast<run_t<scalar_t>>(g);
    if (SUM) lanes[k] += g;
  }
  finish_run(out, grad_x, len);
}

// Words [lo, hi) of the forward pass. Parameters by value: the loops see locals, not references, and vectorize.
template <typename scalar_t>
SGC_CPU_CLONES void forward_words(const BiasActParams p, const WordBias<at::opmath_type<scalar_t>, scalar_t>& word_bias,
                                  const int64_t lo, const int64_t hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto* x = static_cast<const scalar_t*>(p.in);
  auto* y = static_cast<scalar_t*>(p.out);
  const acc_t slope = static_cast<acc_t>(p.negative_slope), scale = static_cast<acc_t>(p.scale);
  const int64_t numel = p.numel, full_words = numel / kBitsPerWord;
  acc_t scratch[kBitsPerWord];
  auto cursor = word_bias.at(lo * kBitsPerWord);
  for (int64_t w = lo; w < hi; ++w) {
    const int64_t base = w * kBitsPerWord;
    const acc_t* bias = word_bias.next(cursor, scratch);
    p.positive[w] = w < full_words ? forward_word(x + base, bias, y + base, kBitsPerWord, slope, scale)
                                   : forward_word(x + base, bias, y + base, int(numel - base), slope, scale);
  }
}

// Runs [lo, hi) of `inner` elements (whole words) of the backward pass, each run's grad_x summed as it goes.
template <typename scalar_t>
SGC_CPU_CLONES void backward_runs(const BiasActParams p, const int64_t lo, const int64_t hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto* grad = static_cast<const scalar_t*>(p.in);
  auto* grad_x = static_cast<scalar_t*>(p.out);
  auto* run_sums = static_cast<acc_t*>(p.run_sums);
  const acc_t slope = static_cast<acc_t>(p.negative_slope), scale = static_cast<acc_t>(p.scale);
  const int64_t words_per_run = p.inner / kBitsPerWord;
  for (int64_t run = lo; run < hi; ++run) {
    acc_t lanes[kBitsPerWord] = {};
    for (int64_t w = run * words_per_run; w < (run + 1) * words_per_run; ++w) {
      const int64_t base = w * kBitsPerWord;
      backward_word<true>(grad + base, p.positive[w], grad_x + base, lanes, kBitsPerWord, slope, scale);
    }
    acc_t sum = 0;
    for (int k = 0; k < kBitsPerWord; ++k) sum += lanes[k];
    run_sums[run] = sum;
  }
}

// Words [lo, hi) of the backward pass, without sums.
template <typename scalar_t>
SGC_CPU_CLONES void backward_words(const BiasActParams p, const int64_t lo, const int64_t hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto* grad = static_cast<const scalar_t*>(p.in);
  auto* grad_x = static_cast<scalar_t*>(p.out);
  const acc_t slope = static_cast<acc_t>(p.negative_slope), scale = static_cast<acc_t>(p.scale);
  const int64_t numel = p.numel, full_words = numel / kBitsPerWord;
  for (int64_t w = lo; w < hi; ++w) {
    const int64_t base = w * kBitsPerWord;
    if (w < full_words)  // a compile-time count: the loop vectorizes
      backward_word<false, scalar_t, acc_t>(grad + base, p.positive[w], grad_x + base, nullptr, kBitsPerWord, slope,
                                            scale);
    else
      backward_word<false, scalar_t, acc_t>(grad + base, p.positive[w], grad_x + base, nullptr, int(numel - base),
                                            slope, scale);
  }
}

template <typename scalar_t>
void forward(const BiasActParams& p) {
  const WordBias<at::opmath_type<scalar_t>, scalar_t> word_bias(static_cast<const scalar_t*>(p.bias), p.channels,
                                                                p.inner);
  at::parallel_for(0, positive_words(p.numel), kGrainWords,
                   [&](int64_t lo, int64_t hi) { forward_words<scalar_t>(p, word_bias, lo, hi); });
}

template <typename scalar_t>
void backward(const BiasActParams& p) {
  if (p.run_sums) {  // runs of whole words: one run of `inner` elements at a time, summed as it goes
    const int64_t grain = std::max<int64_t>(1, kGrainWords / (p.inner / kBitsPerWord));
    at::parallel_for(0, p.numel / p.inner, grain,
                     [&](int64_t lo, int64_t hi) { backward_runs<scalar_t>(p, lo, hi); });
  } else {
    at::parallel_for(0, positive_words(p.numel), kGrainWords,
                     [&](int64_t lo, int64_t hi) { backward_words<scalar_t>(p, lo, hi); });
  }
}

}  // namespace

void bias_act_cpu(const BiasActParams& p, BiasActPass pass, c10::ScalarType dtype) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "bias_act_cpu", [&] {
    if (pass == BiasActPass::kForward) forward<scalar_t>(p);
    else backward<scalar_t>(p);
  });
}

}  // namespace stylegan_cuda
