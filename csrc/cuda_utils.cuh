// Small helpers shared by the CUDA kernels of every op.
#pragma once
// Only c10's CUDA headers: ATen/cuda/CUDAContext.h would also need the cuBLAS/cuSPARSE headers.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace stylegan_cuda {

// VEC consecutive elements moved as one aligned load or store.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// How many elements one thread moves at a time: 16 bytes when every pointer allows it, else one.
template <typename T>
constexpr int kVecWidth = 16 / sizeof(T) > 8 ? 8 : 16 / sizeof(T);

inline bool aligned_to(const void* ptr, int64_t bytes) {
  return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

// A grid that fills the device without launching more blocks than there is work.
inline int grid_size(int64_t work_items, int threads) {
  const int64_t wanted = (work_items + threads - 1) / threads;
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t cap = int64_t(sms) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

}  // namespace stylegan_cuda
