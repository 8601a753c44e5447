// Runs of elements converted between a storage type and its op-math type, for the CPU kernels.
//
// The half types are staged: a kernel converts a run of input into op-math (float) buffers, computes on those, and
// converts a run of output back. GCC converts float16 (c10::Half) one element at a time, and a loop that does so
// stays scalar (20x slower than float32 here); float16 runs go through F16C instead, eight or sixteen elements per
// instruction, where the CPU has it (checked at run time, so that a build for any x86-64 uses it). bfloat16 loops
// vectorize either way, but bias_act's and adain_noise's ran faster staged (forward at [8,128,64,64]: 0.40 -> 0.30 ms
// and 1.08 -> 0.71 ms; upfirdn2d's, which convert into its row buffers anyway, gained or lost up to 20% by case,
// within this machine's noise). The results are bit-identical to c10's own conversions (round to nearest even).
//
//   const run_t<scalar_t>* in = readable_run(x, x_buffer, n);  // x itself, or x converted into x_buffer
//   run_t<scalar_t>* out = writable_run(y, y_buffer);          // y itself, or y_buffer
//   ... out[i] = static_cast<run_t<scalar_t>>(f(static_cast<acc_t>(in[i]))) ...
//   finish_run(out, y, n);                                     // y_buffer converted into y, if staged
#pragma once
#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace stylegan_cuda {

template <typename scalar_t>
constexpr bool kStagedInRuns = std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;

// The type a kernel reads and writes in place of scalar_t: the op-math type where staged, else scalar_t itself.
template <typename scalar_t>
using run_t = std::conditional_t<kStagedInRuns<scalar_t>, at::opmath_type<scalar_t>, scalar_t>;

namespace detail {

#if defined(__x86_64__)
inline bool cpu_has_f16c() {
#if defined(__F16C__)
  return true;
#else
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
#endif
}

__attribute__((target("avx,f16c"))) inline int64_t half_to_float_f16c(const c10::Half* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)  // as wide as the kernels' loads: a load spanning two narrower stores would stall
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#endif
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  return i;
}

__attribute__((target("avx,f16c"))) inline int64_t float_to_half_f16c(const float* src, c10::Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  return i;
}
#endif

}  // namespace detail

// dst[i] = To(src[i]) for i < n.
template <typename To, typename From>
inline void convert_run(const From* __restrict__ src, To* __restrict__ dst, int64_t n) {
  int64_t done = 0;
#if defined(__x86_64__)
  if constexpr (std::is_same_v<From, c10::Half> && std::is_same_v<To, float>) {
    if (detail::cpu_has_f16c()) done = detail::half_to_float_f16c(src, dst, n);
  } else if constexpr (std::is_same_v<From, float> && std::is_same_v<To, c10::Half>) {
    if (detail::cpu_has_f16c()) done = detail::float_to_half_f16c(src, dst, n);
  }
#endif
  for (int64_t i = done; i < n; ++i) dst[i] = static_cast<To>(src[i]);
}

// The n elements at `src` as a kernel reads them: converted into `buffer` if staged, else `src` itself.
template <typename scalar_t, typename acc_t>
inline const run_t<scalar_t>* readable_run(const scalar_t* src, acc_t* buffer, int64_t n) {
  if constexpr (kStagedInRuns<scalar_t>) {
    convert_run(src, buffer, n);
    return buffer;
  } else {
    return src;
  }
}

// Where a kernel writes a run bound for `dst`: `buffer` if staged (then finish_run), else `dst` itself.
template <typename scalar_t, typename acc_t>
inline run_t<scalar_t>* writable_run(scalar_t* dst, acc_t* buffer) {
  if constexpr (kStagedInRuns<scalar_t>) {
    return buffer;
  } else {
    return dst;
  }
}

// Moves a run written where writable_run said to `dst`, when it was staged.
template <typename scalar_t>
inline void finish_run(const run_t<scalar_t>* written, scalar_t* dst, int64_t n) {
  if constexpr (kStagedInRuns<scalar_t>) convert_run(written, dst, n);
}

}  // namespace stylegan_cuda
