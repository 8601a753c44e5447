// Host code of bias_act: schema, argument checks, dispatch to the CPU or CUDA kernel, autograd.
#include <ATen/OpMathType.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "bias_act.h"

namespace stylegan_cuda {
namespace {

void check_activation(double negative_slope, double scale) {
  TORCH_CHECK(negative_slope >= 0, "negative_slope must be >= 0, got ", negative_slope);
  TORCH_CHECK(scale > 0, "scale must be > 0, got ", scale);
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
  // A dimension of size 1 may carry any stride, even 0. With one channel every element is in channel 0, and runs of
  // one sample's elements tile the tensor.
  p.inner = p.channels == 1 ? std::max<int64_t>(1, p.numel / std::max<int64_t>(1, out.size(0))) : out.stride(1);
  p.negative_slope = negative_slope;
  p.scale = scale;
  return p;
}

at::Tensor empty_positive_words(const at::Tensor& like) {
  return at::empty({positive_words(like.numel())}, like.options().dtype(at::kInt));
}

std::tuple<at::Tensor, at::Tensor> bias_act(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                                            double negative_slope, double scale) {
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
  at::Tensor positive = empty_positive_words(y);
  const at::Tensor xd = with_layout_of(x, y);
  BiasActParams p = make_params(y, negative_slope, scale);
  p.in = xd.data_ptr();
  p.bias = b.defined() ? b.data_ptr() : nullptr;
  p.positive = reinterpret_cast<uint32_t*>(positive.data_ptr<int32_t>());
  run(p, BiasActPass::kForward, y);
  return {y, positive};
}

// `y_strides`: the layout of the forward pass's y, whose memory order the bits of `positive` follow. grad_x gets it.
std::tuple<at::Tensor, at::Tensor> bias_act_backward(const at::Tensor& grad, const at::Tensor& positive,
                                                     at::IntArrayRef y_strides, double negative_slope, double scale,
                                                     bool bias_grad) {
  check_floating(grad, "grad");
  TORCH_CHECK(grad.dim() >= 2, "grad must have rank 2 or more, got rank ", grad.dim());
  TORCH_CHECK(y_strides.size() == size_t(grad.dim()), "y_strides must have one stride per dimension of grad (",
              grad.dim(), "), got ", y_strides.size());
  check_activation(negative_slope, scale);
  at::Tensor grad_x = at::empty_strided(grad.sizes(), y_strides, grad.options());
  TORCH_CHECK(grad_x.is_non_overlapping_and_dense(), "y_strides must describe a dense layout of shape ", grad.sizes(),
              ", got ", y_strides);
  TORCH_CHECK(positive.device() == grad.device(), "positive must be on the device of grad (", grad.device(), "), got ",
              positive.device());
  TORCH_CHECK(positive.scalar_type() == at::kInt && positive.dim() == 1 && positive.is_contiguous() &&
                  positive.size(0) == positive_words(grad.numel()),
              "positive must be the int32 words [", positive_words(grad.numel()),
              "] that bias_act returned for a y of this shape, got ", positive.scalar_type(), " ", positive.sizes());
  const at::Tensor gd = with_layout_of(grad, grad_x);
  BiasActParams p = make_params(grad_x, negative_slope, scale);
  p.in = gd.data_ptr();
  p.positive = reinterpret_cast<uint32_t*>(positive.data_ptr<int32_t>());
  // On the CPU, when each run of `inner` elements (one channel of one sample) is whole mask words, the kernel sums
  // grad_x per run as it goes, and the bias gradient adds up those sums instead of reading grad_x again.
  at::Tensor run_sums;
  if (bias_grad && grad_x.is_cpu() && p.numel > 0 && p.inner % kBitsPerWord == 0) {
    run_sums = at::empty({p.numel / p.inner}, grad.options().dtype(at::toOpMathType(grad.scalar_type())));
    p.run_sums = run_sums.data_ptr();
  }
  run(p, BiasActPass::kBackward, grad_x);
  at::Tensor grad_bias;
  if (!bias_grad) {
    grad_bias = at::empty({0}, grad.options());
  } else if (run_sums.defined()) {
    grad_bias = run_sums.view({-1, p.channels}).sum(0).to(grad.scalar_type());
  } else {
    std::vector<int64_t> dims = {0};
    for (int64_t d = 2; d < grad_x.dim(); ++d) dims.push_back(d);
    grad_bias = grad_x.sum(dims);
  }
  return {grad_x, grad_bias};
}

// bias_act_backward through the dispatcher, as the autograd functions call it: below autograd in their forward, with
// autograd in their backward, where a double backward records it again.
std::tuple<at::Tensor, at::Tensor> call_bias_act_backward(const at::Tensor& grad, const at::Tensor& positive,
                                                          c10::SymIntArrayRef y_strides, double negative_slope,
                                                          double scale, bool bias_grad) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("stylegan_cuda::bias_act_backward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                       c10::SymIntArrayRef, double, double, bool)>();
  return op.call(grad, positive, y_strides, negative_slope, scale, bias_grad);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What both backward passes read: the sign bits, the layout of y that they follow, and the activation.
void save_activation(AutogradContext* ctx, const at::Tensor& positive, c10::SymIntArrayRef y_strides,
                     double negative_slope, double scale) {
  ctx->save_for_backward({positive});
  ctx->saved_data["y_strides"] = y_strides;
  ctx->saved_data["negative_slope"] = negative_slope;
  ctx->saved_data["scale"] = scale;
}

// bias_act_backward with the sign bits and activation saved by save_activation: grad_x = grad * scale * (1 or
// negative_slope, by the bits), and when `bias_grad` its sum over every dimension but 1.
std::tuple<at::Tensor, at::Tensor> saved_bias_act_backward(AutogradContext* ctx, const at::Tensor& grad,
                                                           bool bias_grad) {
  return call_bias_act_backward(grad, ctx->get_saved_variables()[0], ctx->saved_data["y_strides"].toSymIntVector(),
                                ctx->saved_data["negative_slope"].toDouble(), ctx->saved_data["scale"].toDouble(),
                                bias_grad);
}

// bias_act's gradient: bias_act_backward.
class BiasActFunction : public torch::autograd::Function<BiasActFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& bias,
                               double negative_slope, double scale) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("stylegan_cuda::bias_act", "")
                               .typed<decltype(bias_act)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, positive] = op.call(x, bias, negative_slope, scale);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({positive});
    ctx->saved_data["has_bias"] = bias.has_value();
    save_activation(ctx, positive, y.sym_strides(), negative_slope, scale);
    return {y, positive};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(4);
    const bool bias_grad = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(1);
    auto [grad_x, grad_bias] = saved_bias_act_backward(ctx, grads[0], bias_grad);
    return {grad_x, bias_grad ? grad_bias : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// bias_act_backward's gradient in `grad`: both its outputs are linear in `grad` (grad_x by a factor of the sign bits,
// grad_bias the sum of grad_x over all but dimension 1), so their adjoints add up before that same factor. Nothing
// reaches the bits.
class BiasActBackwardFunction : public torch::autograd::Function<BiasActBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& positive,
                               c10::SymIntArrayRef y_strides, double negative_slope, double scale, bool bias_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_x, grad_bias] = call_bias_act_backward(grad, positive, y_strides, negative_slope, scale, bias_grad);
    ctx->set_materialize_grads(false);
    ctx->saved_data["shape"] = grad.sym_sizes();
    ctx->saved_data["bias_grad"] = bias_grad;
    save_activation(ctx, positive, y_strides, negative_slope, scale);
    return {grad_x, grad_bias};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor total = grads[0];
    if (ctx->saved_data["bias_grad"].toBool() && grads[1].defined()) {
      const std::vector<c10::SymInt> shape = ctx->saved_data["shape"].toSymIntVector();
      std::vector<c10::SymInt> per_channel_shape(shape.size(), c10::SymInt(1));
      per_channel_shape[1] = shape[1];
      const at::Tensor per_channel = grads[1].view_symint(per_channel_shape);
      total = total.defined() ? total + per_channel : per_channel.expand_symint(shape);
    }
    variable_list grads_of_inputs(6);
    if (total.defined()) grads_of_inputs[0] = std::get<0>(saved_bias_act_backward(ctx, total, false));
    return grads_of_inputs;
  }
};

std::tuple<at::Tensor, at::Tensor> bias_act_autograd(const at::Tensor& x, const std::optional<at::Tensor>& bias,
                                                     double negative_slope, double scale) {
  const variable_list out = BiasActFunction::apply(x, bias, negative_slope, scale);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward_autograd(const at::Tensor& grad, const at::Tensor& positive,
                                                              c10::SymIntArrayRef y_strides, double negative_slope,
                                                              double scale, bool bias_grad) {
  const variable_list out =
      BiasActBackwardFunction::apply(grad, positive, y_strides, negative_slope, scale, bias_grad);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(stylegan_cuda, m) {
  // bias_act returns y and the sign bits of x + bias that its backward pass reads (see bias_act.h).
  m.def("bias_act(Tensor x, Tensor? bias, float negative_slope, float scale) -> (Tensor, Tensor)");
  m.def(
      "bias_act_backward(Tensor grad, Tensor positive, SymInt[] y_strides, float negative_slope, float scale, "
      "bool bias_grad) -> (Tensor, Tensor)");
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

TORCH_LIBRARY_IMPL(stylegan_cuda, Autograd, m) {
  m.impl("bias_act", &bias_act_autograd);
  m.impl("bias_act_backward", &bias_act_backward_autograd);
}

}  // namespace stylegan_cuda
