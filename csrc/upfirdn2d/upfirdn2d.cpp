// Host code of upfirdn2d: schema, argument checks, output allocation, dispatch to the CPU or CUDA kernel, autograd.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <limits>

#include "upfirdn2d.h"

namespace stylegan_cuda {
namespace {

// The output keeps channels_last only when x is exactly that (the rule of the Python reference and fake).
bool is_channels_last(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
}

int64_t output_size(int64_t in, int64_t up, int64_t pad0, int64_t pad1, int64_t k, int64_t down) {
  return floor_div(in * up + pad0 + pad1 - k, down) + 1;
}

// up, down: (x, y); pad: (x0, x1, y0, y1).
at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& kernel, at::IntArrayRef up, at::IntArrayRef down,
                     at::IntArrayRef pad, bool flip_kernel) {
  TORCH_CHECK(up.size() == 2 && down.size() == 2, "up and down must be (x, y) pairs, got ", up, " and ", down);
  TORCH_CHECK(pad.size() == 4, "pad must be (x0, x1, y0, y1), got ", pad);
  const int64_t up_x = up[0], up_y = up[1], down_x = down[0], down_y = down[1];
  const int64_t pad_x0 = pad[0], pad_x1 = pad[1], pad_y0 = pad[2], pad_y1 = pad[3];
  TORCH_CHECK(x.dim() == 4, "x must have shape [N, C, H, W], got rank ", x.dim());
  check_floating(x, "x");
  TORCH_CHECK(kernel.dim() == 2, "kernel must be 2-D [kh, kw], got rank ", kernel.dim());
  // The kernels compute in the accumulation type of x and read the weights in it.
  const bool double_x = x.scalar_type() == at::kDouble;
  TORCH_CHECK(kernel.scalar_type() == (double_x ? at::kDouble : at::kFloat), "kernel must be ",
              double_x ? "float64 for float64 x" : "float32", ", got ", kernel.scalar_type());
  TORCH_CHECK(kernel.device() == x.device(), "kernel must be on the device of x (", x.device(), "), got ",
              kernel.device());
  const int64_t kh = kernel.size(0), kw = kernel.size(1);
  TORCH_CHECK(kh >= 1 && kw >= 1 && kh <= kUpfirdn2dMaxKernelSize && kw <= kUpfirdn2dMaxKernelSize,
              "kernel must be between 1x1 and ", kUpfirdn2dMaxKernelSize, "x", kUpfirdn2dMaxKernelSize, ", got ",
              kernel.sizes());
  TORCH_CHECK(up_x >= 1 && up_y >= 1, "up must be >= 1, got (", up_x, ", ", up_y, ")");
  TORCH_CHECK(down_x >= 1 && down_y >= 1, "down must be >= 1, got (", down_x, ", ", down_y, ")");
  constexpr int64_t kIntMax = std::numeric_limits<int>::max() / 4;
  TORCH_CHECK(up_x <= kIntMax && up_y <= kIntMax && down_x <= kIntMax && down_y <= kIntMax,
              "up and down must be below ", kIntMax);
  for (int64_t pad : {pad_x0, pad_x1, pad_y0, pad_y1})
    TORCH_CHECK(pad >= -kIntMax && pad <= kIntMax, "pad must be within +-", kIntMax, ", got ", pad);
  const int64_t out_h = output_size(x.size(2), up_y, pad_y0, pad_y1, kh, down_y);
  const int64_t out_w = output_size(x.size(3), up_x, pad_x0, pad_x1, kw, down_x);
  TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d of a ", x.size(2), "x", x.size(3), " input with up=(", up_x, ", ",
              up_y, "), pad=(", pad_x0, ", ", pad_x1, ", ", pad_y0, ", ", pad_y1, "), a ", kh, "x", kw,
              " kernel and down=(", down_x, ", ", down_y, ") leaves an empty output (", out_h, "x", out_w, ")");

  const bool channels_last = is_channels_last(x);
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(format));
  if (out.numel() == 0) return out;
  const at::Tensor xd = x.contiguous(format);
  const at::Tensor kd = kernel.contiguous();

  Upfirdn2dParams p{};
  p.x = xd.data_ptr();
  p.kernel = kd.data_ptr();
  p.out = out.data_ptr();
  p.batch = x.size(0);
  p.channels = x.size(1);
  p.in_h = x.size(2);
  p.in_w = x.size(3);
  p.out_h = out_h;
  p.out_w = out_w;
  p.up_x = static_cast<int>(up_x);
  p.up_y = static_cast<int>(up_y);
  p.down_x = static_cast<int>(down_x);
  p.down_y = static_cast<int>(down_y);
  p.pad_x0 = static_cast<int>(pad_x0);
  p.pad_y0 = static_cast<int>(pad_y0);
  p.kernel_h = static_cast<int>(kh);
  p.kernel_w = static_cast<int>(kw);
  p.flip_kernel = flip_kernel;
  p.channels_last = channels_last;
  if (x.is_cuda()) {
#ifdef WITH_CUDA
    const c10::DeviceGuard guard(x.device());
    upfirdn2d_cuda(p, x.scalar_type());
#else
    TORCH_CHECK(false, "stylegan_cuda was built without CUDA kernels");
#endif
  } else {
    upfirdn2d_cpu(p, x.scalar_type());
  }
  return out;
}

// The op through the dispatcher, as the autograd function calls it: below autograd in forward, with it in backward.
at::Tensor call_upfirdn2d(const at::Tensor& x, const at::Tensor& kernel, at::IntArrayRef up, at::IntArrayRef down,
                          at::IntArrayRef pad, bool flip_kernel) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("stylegan_cuda::upfirdn2d", "").typed<decltype(upfirdn2d)>();
  return op.call(x, kernel, up, down, pad, flip_kernel);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The pads (before, after) of the gradient pass along one axis: the transposed window, sized to give back exactly
// `in_size`. Sizes may be symbolic (torch.compile): the pads are plain ints, as the schema takes them.
std::pair<int64_t, int64_t> backward_pad(const c10::SymInt& in_size, const c10::SymInt& out_size, int64_t up,
                                         int64_t down, int64_t pad0, const c10::SymInt& k) {
  const c10::SymInt before = k - pad0 - 1, after = in_size * up - out_size * down + (pad0 - up + 1);
  return {before.guard_int(__FILE__, __LINE__), after.guard_int(__FILE__, __LINE__)};
}

// The op is linear in x; its adjoint is the same op with up and down swapped and the kernel flipped, called through
// the dispatcher with autograd, so that it differentiates again.
class Upfirdn2dFunction : public torch::autograd::Function<Upfirdn2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& kernel, at::IntArrayRef up,
                            at::IntArrayRef down, at::IntArrayRef pad, bool flip_kernel) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor out = call_upfirdn2d(x, kernel, up, down, pad, flip_kernel);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({kernel});
    ctx->saved_data["up"] = up;
    ctx->saved_data["down"] = down;
    ctx->saved_data["pad"] = pad;
    ctx->saved_data["flip_kernel"] = flip_kernel;
    ctx->saved_data["in_h"] = x.sym_size(2);
    ctx->saved_data["in_w"] = x.sym_size(3);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!ctx->needs_input_grad(1), "upfirdn2d: kernel must not require a gradient (the op differentiates x only)");
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const c10::SymInt in_h = ctx->saved_data["in_h"].toSymInt(), in_w = ctx->saved_data["in_w"].toSymInt();
    if (in_h.sym_eq(0).guard_bool(__FILE__, __LINE__) || in_w.sym_eq(0).guard_bool(__FILE__, __LINE__)) {
      // An empty x padded to a non-empty output: its gradient is empty too (the op refuses empty outputs).
      const at::Tensor grad_x = at::zeros_symint({grad.sym_size(0), grad.sym_size(1), in_h, in_w}, grad.options());
      return {grad_x, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const at::Tensor kernel = ctx->get_saved_variables()[0];
    const std::vector<int64_t> up = ctx->saved_data["up"].toIntVector(), down = ctx->saved_data["down"].toIntVector();
    const std::vector<int64_t> pad = ctx->saved_data["pad"].toIntVector();
    const auto [pad_x0, pad_x1] = backward_pad(in_w, grad.sym_size(3), up[0], down[0], pad[0], kernel.sym_size(1));
    const auto [pad_y0, pad_y1] = backward_pad(in_h, grad.sym_size(2), up[1], down[1], pad[2], kernel.sym_size(0));
    const at::Tensor grad_x = call_upfirdn2d(grad, kernel, down, up, {pad_x0, pad_x1, pad_y0, pad_y1},
                                             !ctx->saved_data["flip_kernel"].toBool());
    return {grad_x, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor upfirdn2d_autograd(const at::Tensor& x, const at::Tensor& kernel, at::IntArrayRef up, at::IntArrayRef down,
                              at::IntArrayRef pad, bool flip_kernel) {
  return Upfirdn2dFunction::apply(x, kernel, up, down, pad, flip_kernel);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(stylegan_cuda, m) {
  m.def("upfirdn2d(Tensor x, Tensor kernel, int[2] up, int[2] down, int[4] pad, bool flip_kernel=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(stylegan_cuda, CPU, m) { m.impl("upfirdn2d", &upfirdn2d); }

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(stylegan_cuda, CUDA, m) { m.impl("upfirdn2d", &upfirdn2d); }
#endif

TORCH_LIBRARY_IMPL(stylegan_cuda, Autograd, m) { m.impl("upfirdn2d", &upfirdn2d_autograd); }

}  // namespace stylegan_cuda
