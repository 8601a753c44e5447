// Host code of adain_noise: schema, argument checks, layouts, dispatch to the CPU or CUDA kernel, autograd.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "adain.h"

namespace stylegan_cuda {
namespace {

at::ScalarType stats_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected, const at::Tensor& x) {
  TORCH_CHECK(t.sizes() == expected, name, " must have shape ", expected, " for x of shape ", x.sizes(), ", got ",
              t.sizes());
}

void check_inputs(const at::Tensor& x, const std::optional<at::Tensor>& noise, const at::Tensor& noise_weight,
                  const at::Tensor& gamma) {
  TORCH_CHECK(x.dim() == 4, "x must have shape [N, C, H, W], got rank ", x.dim());
  check_floating(x, "x");
  const int64_t N = x.size(0), C = x.size(1);
  if (noise.has_value()) {
    check_same_device_dtype(*noise, "noise", x, "x");
    check_shape(*noise, "noise", {N, 1, x.size(2), x.size(3)}, x);
  }
  check_same_device_dtype(noise_weight, "noise_weight", x, "x");
  check_shape(noise_weight, "noise_weight", {C}, x);
  check_same_device_dtype(gamma, "gamma", x, "x");
  check_shape(gamma, "gamma", {N, C}, x);
}

// Tensors laid out as the kernels read them: x's planes either contiguous or, on the CPU, channels_last (the CUDA
// kernel reads contiguous planes, so a channels_last x is converted there). Outputs take the dense layout of x, the
// rule of torch.empty_like(x) that the fake kernels follow: a kernel output in another layout is copied into it.
struct Layout {
  const at::Tensor& x;
  bool channels_last;

  explicit Layout(const at::Tensor& x_in) : x(x_in) {
    const bool is_channels_last = !x.is_contiguous() && (x.is_contiguous(at::MemoryFormat::ChannelsLast) ||
                                                         x.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
    channels_last = is_channels_last && !x.is_cuda();
  }
  at::Tensor kernel_input(const at::Tensor& t) const {
    return t.contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  }
  at::Tensor output(const at::Tensor& kernel_output) const {
    if (kernel_output.strides() == c10::IntArrayRef(dense_strides_like(x))) return kernel_output;
    return empty_dense_like(x).copy_(kernel_output);
  }
};

// Fills the parts of the parameters shared by both passes; `holder` keeps the zero noise plane alive.
AdainParams make_params(const at::Tensor& x, const std::optional<at::Tensor>& noise, const at::Tensor& noise_weight,
                        const at::Tensor& gamma, double negative_slope, const Layout& layout, at::Tensor& holder) {
  AdainParams p{};
  p.x = x.data_ptr();
  p.batch = x.size(0);
  p.channels = x.size(1);
  p.plane = x.size(2) * x.size(3);
  if (noise.has_value()) {
    holder = noise->contiguous();
    p.noise_batch_stride = p.plane;
  } else {
    holder = at::zeros({p.plane}, x.options());
    p.noise_batch_stride = 0;
  }
  p.noise = holder.data_ptr();
  p.noise_weight = noise_weight.data_ptr();
  p.gamma = gamma.data_ptr();
  p.channels_last = layout.channels_last;
  p.negative_slope = negative_slope;
  return p;
}

void run(const AdainParams& p, AdainPass pass, const at::Tensor& like) {
  if (p.batch * p.channels * p.plane == 0) return;
  if (like.is_cuda()) {
#ifdef WITH_CUDA
    const c10::DeviceGuard guard(like.device());
    adain_cuda(p, pass, like.scalar_type());
#else
    TORCH_CHECK(false, "stylegan_cuda was built without CUDA kernels");
#endif
  } else {
    adain_cpu(p, pass, like.scalar_type());
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> adain_noise(const at::Tensor& x_in, const std::optional<at::Tensor>& noise,
                                                           const at::Tensor& noise_weight, const at::Tensor& gamma,
                                                           const at::Tensor& beta, double negative_slope, double eps) {
  check_inputs(x_in, noise, noise_weight, gamma);
  check_same_device_dtype(beta, "beta", x_in, "x");
  check_shape(beta, "beta", {x_in.size(0), x_in.size(1)}, x_in);
  TORCH_CHECK(eps > 0, "eps must be > 0, got ", eps);
  // Below float64, the statistics are float32, where a smaller eps would be flushed to zero.
  constexpr double kSmallestFloat = std::numeric_limits<float>::min();
  TORCH_CHECK(x_in.scalar_type() == at::kDouble || eps >= kSmallestFloat, "eps must be >= ", kSmallestFloat,
              " (the smallest normal float32: the statistics of ", x_in.scalar_type(), " inputs are float32), got ",
              eps);
  const Layout layout(x_in);
  const at::Tensor x = layout.kernel_input(x_in);
  const at::Tensor w = noise_weight.contiguous(), g = gamma.contiguous(), b = beta.contiguous();
  at::Tensor y = at::empty_like(x);
  const auto stats_options = x.options().dtype(stats_dtype(x));
  at::Tensor mean = at::empty({x.size(0), x.size(1)}, stats_options);
  at::Tensor rstd = at::empty({x.size(0), x.size(1)}, stats_options);
  at::Tensor noise_holder;
  AdainParams p = make_params(x, noise, w, g, negative_slope, layout, noise_holder);
  p.beta = b.data_ptr();
  p.y = y.data_ptr();
  p.mean = mean.data_ptr();
  p.rstd = rstd.data_ptr();
  p.eps = eps;
  if (x.numel() == 0) {  // planes without elements: statistics of nothing
    mean.zero_(), rstd.zero_();
  }
  run(p, AdainPass::kForward, x);
  return {layout.output(y), mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adain_noise_backward(
    const at::Tensor& grad_y_in, const at::Tensor& x_in, const std::optional<at::Tensor>& noise,
    const at::Tensor& noise_weight, const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
    double negative_slope) {
  check_inputs(x_in, noise, noise_weight, gamma);
  check_same_device_dtype(grad_y_in, "grad_y", x_in, "x");
  check_shape(grad_y_in, "grad_y", x_in.sizes(), x_in);
  const at::IntArrayRef planes = gamma.sizes();
  for (const auto& [t, name] : {std::pair{&mean, "mean"}, std::pair{&rstd, "rstd"}}) {
    TORCH_CHECK(t->device() == x_in.device() && t->scalar_type() == stats_dtype(x_in), name, " must be a ",
                stats_dtype(x_in), " tensor on ", x_in.device(), ", got ", t->scalar_type(), " on ", t->device());
    check_shape(*t, name, planes, x_in);
  }
  const Layout layout(x_in);
  const at::Tensor x = layout.kernel_input(x_in), grad_y = layout.kernel_input(grad_y_in);
  const at::Tensor w = noise_weight.contiguous(), g = gamma.contiguous();
  const at::Tensor m = mean.contiguous(), r = rstd.contiguous();
  at::Tensor grad_x = at::empty_like(x);
  const auto stats_options = m.options();
  at::Tensor grad_gamma = at::empty(planes, stats_options), grad_beta = at::empty(planes, stats_options);
  at::Tensor grad_noise_weight = at::empty(planes, stats_options);
  at::Tensor noise_holder;
  AdainParams p = make_params(x, noise, w, g, negative_slope, layout, noise_holder);
  p.grad_y = grad_y.data_ptr();
  p.mean = m.data_ptr();
  p.rstd = r.data_ptr();
  p.grad_x = grad_x.data_ptr();
  p.grad_gamma = grad_gamma.data_ptr();
  p.grad_beta = grad_beta.data_ptr();
  p.grad_noise_weight = grad_noise_weight.data_ptr();
  if (x.numel() == 0) {
    grad_gamma.zero_(), grad_beta.zero_(), grad_noise_weight.zero_();
  }
  run(p, AdainPass::kBackward, x);
  return {layout.output(grad_x), grad_gamma, grad_beta, grad_noise_weight.sum(0)};
}

// The ops through the dispatcher, as the autograd functions call them.
std::tuple<at::Tensor, at::Tensor, at::Tensor> call_adain_noise(const at::Tensor& x, const std::optional<at::Tensor>& noise,
                                                                const at::Tensor& noise_weight, const at::Tensor& gamma,
                                                                const at::Tensor& beta, double negative_slope,
                                                                double eps) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("stylegan_cuda::adain_noise", "").typed<decltype(adain_noise)>();
  return op.call(x, noise, noise_weight, gamma, beta, negative_slope, eps);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_adain_noise_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const std::optional<at::Tensor>& noise,
    const at::Tensor& noise_weight, const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
    double negative_slope) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("stylegan_cuda::adain_noise_backward", "")
                             .typed<decltype(adain_noise_backward)>();
  return op.call(grad_y, x, noise, noise_weight, gamma, mean, rstd, negative_slope);
}

// sum_c grad_x[:, c] * noise_weight[c], [N, 1, H, W]: the gradient of the noise map that all channels share.
// Matrix-vector products over a view of grad_x in its own layout (einsum and matmul copy a contiguous grad_x first
// when noise_weight requires grad: 40x slower on the CPU).
at::Tensor channel_weighted_sum(const at::Tensor& grad_x, const at::Tensor& noise_weight) {
  const c10::SymInt n = grad_x.sym_size(0), c = grad_x.sym_size(1), h = grad_x.sym_size(2), w = grad_x.sym_size(3);
  if (!grad_x.is_contiguous())  // channels_last
    return at::matmul(grad_x.permute({0, 2, 3, 1}).reshape_symint({n, h * w, c}), noise_weight).view_symint({n, 1, h, w});
  if (grad_x.is_cpu() && grad_x.scalar_type() == at::kHalf)  // ATen's CPU float16 bmm is slow here
    return channel_weighted_sum(grad_x.to(at::kFloat), noise_weight.to(at::kFloat)).to(at::kHalf);
  return at::bmm(noise_weight.view_symint({1, 1, c}).expand_symint({n, 1, c}), grad_x.view_symint({n, c, h * w}))
      .view_symint({n, 1, h, w});
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// adain_noise's gradient: adain_noise_backward's for x, noise_weight, gamma and beta, and for the noise map, which
// every channel shares, the channel-weighted sum of grad_x.
class AdainNoiseFunction : public torch::autograd::Function<AdainNoiseFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const std::optional<at::Tensor>& noise,
                               const at::Tensor& noise_weight, const at::Tensor& gamma, const at::Tensor& beta,
                               double negative_slope, double eps) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, mean, rstd] = call_adain_noise(x, noise, noise_weight, gamma, beta, negative_slope, eps);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({mean, rstd});
    ctx->save_for_backward({x, noise.value_or(at::Tensor()), noise_weight, gamma, mean, rstd});
    ctx->saved_data["negative_slope"] = negative_slope;
    return {y, mean, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& grad_y = grads[0];
    if (!grad_y.defined()) return variable_list(7);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &noise = saved[1], &noise_weight = saved[2], &gamma = saved[3];
    const std::optional<at::Tensor> noise_opt = noise.defined() ? std::optional<at::Tensor>(noise) : std::nullopt;
    auto [grad_x, grad_gamma, grad_beta, grad_noise_weight] = call_adain_noise_backward(
        grad_y, x, noise_opt, noise_weight, gamma, saved[4], saved[5], ctx->saved_data["negative_slope"].toDouble());
    at::Tensor grad_noise;
    if (noise.defined() && ctx->needs_input_grad(1)) grad_noise = channel_weighted_sum(grad_x, noise_weight);
    const auto dtype = x.scalar_type();
    return {grad_x,
            grad_noise,
            noise.defined() ? grad_noise_weight.to(dtype) : at::Tensor(),
            grad_gamma.to(dtype),
            grad_beta.to(dtype),
            at::Tensor(),
            at::Tensor()};
  }
};

// adain_noise_backward as a function of its own that refuses to be differentiated.
class AdainNoiseBackwardFunction : public torch::autograd::Function<AdainNoiseBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_y, const at::Tensor& x,
                               const std::optional<at::Tensor>& noise, const at::Tensor& noise_weight,
                               const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
                               double negative_slope) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_x, grad_gamma, grad_beta, grad_noise_weight] =
        call_adain_noise_backward(grad_y, x, noise, noise_weight, gamma, mean, rstd, negative_slope);
    return {grad_x, grad_gamma, grad_beta, grad_noise_weight};
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "double backward of adain_noise is not supported (StyleGAN v1's penalties differentiate twice only "
                "through the discriminator); use impl='reference' where a second derivative through AdaIN is needed");
    return {};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> adain_noise_autograd(const at::Tensor& x,
                                                                    const std::optional<at::Tensor>& noise,
                                                                    const at::Tensor& noise_weight,
                                                                    const at::Tensor& gamma, const at::Tensor& beta,
                                                                    double negative_slope, double eps) {
  const variable_list out = AdainNoiseFunction::apply(x, noise, noise_weight, gamma, beta, negative_slope, eps);
  return {out[0], out[1], out[2]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adain_noise_backward_autograd(
    const at::Tensor& grad_y, const at::Tensor& x, const std::optional<at::Tensor>& noise,
    const at::Tensor& noise_weight, const at::Tensor& gamma, const at::Tensor& mean, const at::Tensor& rstd,
    double negative_slope) {
  const variable_list out =
      AdainNoiseBackwardFunction::apply(grad_y, x, noise, noise_weight, gamma, mean, rstd, negative_slope);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(stylegan_cuda, m) {
  m.def(
      "adain_noise(Tensor x, Tensor? noise, Tensor noise_weight, Tensor gamma, Tensor beta, float negative_slope, "
      "float eps) -> (Tensor, Tensor, Tensor)");
  m.def(
      "adain_noise_backward(Tensor grad_y, Tensor x, Tensor? noise, Tensor noise_weight, Tensor gamma, Tensor mean, "
      "Tensor rstd, float negative_slope) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(stylegan_cuda, CPU, m) {
  m.impl("adain_noise", &adain_noise);
  m.impl("adain_noise_backward", &adain_noise_backward);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(stylegan_cuda, CUDA, m) {
  m.impl("adain_noise", &adain_noise);
  m.impl("adain_noise_backward", &adain_noise_backward);
}
#endif

TORCH_LIBRARY_IMPL(stylegan_cuda, Autograd, m) {
  m.impl("adain_noise", &adain_noise_autograd);
  m.impl("adain_noise_backward", &adain_noise_backward_autograd);
}

}  // namespace stylegan_cuda
