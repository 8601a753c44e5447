// Host code of bias_act: schema, argument checks, dispatch to the CPU or CUDA kernel.
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "bias_act.h"

namespace stylegan_cuda {
namespace {

void check_activation(double negative_slope, double scale) {
  TORCH_CHECK(negative_slope >= 0, "negative_slope must be >= 0 (the backward pass reads the sign off the output), got ",
              negative_slope);
  TORCH_CHECK(scale > 0, "scale must be > 0 (the backward pass reads the sign off the output), got ", scale);
}

void run(const BiasActParams& p, BiasActPass pass, const at::Tensor& like) {
  if (p.numel == 0) return;
  if (like.is_cuda()) {
#ifdef WITH_CUDA
    const c10::DeviceGuard guard(like.device());
    bias_act_cuda(p, pass, like.scalar_type());
#else
    TORCH_CHECK(false, "stylegan_cuda was built without CUDA kernels");
#endif
  } else {
    bias_act_cpu(p, pass, like.scalar_type());
  }
}

BiasActParams make_params(const at::Tensor& out, double negative_slope, double scale) {
  BiasActParams p{};
  p.out = out.data_ptr();
  p.numel = out.numel();
  p.channels = out.size(1);
  p.inner = out.stride(1);
  p.negative_slope = negative_slope;
  p.scale = scale;
  return p;
}

at::Tensor bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias, double negative_slope, double scale) {
  TORCH_CHECK(x.dim() >= 2, "x must have rank 2 or more ([N, C, ...]), got rank ", x.dim());
  check_floating(x, "x");
  check_activation(negative_slope, scale);
  at::Tensor b;
  if (bias.has_value()) {
    b = bias->contiguous();
    check_same_device_dtype(b, "bias", x, "x");
    TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(1), "bias must have shape [", x.size(1),
                "] (the length of x.shape[1]), got ", b.sizes());
  }
  at::Tensor y = empty_dense_like(x);
  const at::Tensor xd = with_layout_of(x, y);
  BiasActParams p = make_params(y, negative_slope, scale);
  p.in = xd.data_ptr();
  p.aux = b.defined() ? b.data_ptr() : nullptr;
  run(p, BiasActPass::kForward, y);
  return y;
}

at::Tensor bias_act_backward(const at::Tensor& grad, const at::Tensor& y, double negative_slope, double scale) {
  check_floating(y, "y");
  check_same_device_dtype(grad, "grad", y, "y");
  TORCH_CHECK(grad.sizes() == y.sizes(), "grad must have the shape of y ", y.sizes(), ", got ", grad.sizes());
  TORCH_CHECK(y.dim() >= 2, "y must have rank 2 or more, got rank ", y.dim());
  check_activation(negative_slope, scale);
  at::Tensor grad_x = empty_dense_like(y);
  const at::Tensor yd = with_layout_of(y, grad_x);
  const at::Tensor gd = with_layout_of(grad, grad_x);
  BiasActParams p = make_params(grad_x, negative_slope, scale);
  p.in = gd.data_ptr();
  p.aux = yd.data_ptr();
  run(p, BiasActPass::kBackward, grad_x);
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(stylegan_cuda, m) {
  m.def("bias_act(Tensor x, Tensor? bias, float negative_slope, float scale) -> Tensor");
  m.def("bias_act_backward(Tensor grad, Tensor y, float negative_slope, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(stylegan_cuda, CPU, m) {
  m.impl("bias_act", &bias_act);
  m.impl("bias_act_backward", &bias_act_backward);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(stylegan_cuda, CUDA, m) {
  m.impl("bias_act", &bias_act);
  m.impl("bias_act_backward", &bias_act_backward);
}
#endif

}  // namespace stylegan_cuda
