// CudaBackend::resnet_block: a whole UNet ResNet block as the persistent kernel
// (resblock_persistent.h) where its shape fits (the 8x8 level of one guided image); elsewhere an
// undefined tensor, and the model runs the block op by op.
#include <cstdlib>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/resblock_persistent.h"

namespace sd::cuda {

namespace {

// SDSERVE_CUDA_PERSISTENT_RESNET=0: every block op by op (read per call).
bool persistent_resnet_enabled() {
  const char* env = std::getenv("SDSERVE_CUDA_PERSISTENT_RESNET");
  return !(env && env[0] == '0');
}

bool aligned16(const Tensor& t) { return (reinterpret_cast<uintptr_t>(t.raw()) & 15u) == 0; }

}  // namespace

Tensor CudaBackend::resnet_block(const ResnetBlockOperands& o) {
  if (!persistent_resnet_enabled() || (dtype_ != DType::kF16 && dtype_ != DType::kBF16)) return Tensor();
  const Tensor& x = o.x;
  if (x.ndim() != 4 || x.dtype() != dtype_) return Tensor();
  const bool has_skip = o.skip.defined();
  const int64_t cs = has_skip ? o.skip.dim(-1) : 0;
  if (has_skip && (o.skip.ndim() != 4 || o.skip.dtype() != dtype_ || o.skip.dim(0) != x.dim(0) ||
                   o.skip.dim(1) != x.dim(1) || o.skip.dim(2) != x.dim(2))) {
    return Tensor();
  }
  ResblockShape s;
  s.b = x.dim(0), s.h = x.dim(1), s.w = x.dim(2), s.ca = x.dim(3), s.cb = cs;
  s.cout = o.w1.defined() ? o.w1.dim(0) : 0;
  s.groups = o.groups;
  s.has_shortcut = o.shortcut_w.defined();
  const int64_t cin = s.ca + s.cb;
  const auto is = [&](const Tensor& t, const Shape& shape) { return t.defined() && t.dtype() == dtype_ && t.shape() == shape; };
  if (!is(o.w1, {s.cout, 3, 3, cin}) || !is(o.w2, {s.cout, 3, 3, s.cout}) || !is(o.gamma1, {cin}) ||
      !is(o.beta1, {cin}) || !is(o.gamma2, {s.cout}) || !is(o.beta2, {s.cout}) || !is(o.b2, {s.cout})) {
    return Tensor();
  }
  if (s.has_shortcut && (!is(o.shortcut_w, {s.cout, cin}) || !is(o.shortcut_b, {s.cout}))) return Tensor();
  const Tensor& t = o.temb_all;
  if (!t.defined() || t.ndim() != 2 || t.dtype() != dtype_ || t.dim(0) != s.b || o.time_col < 0 ||
      o.time_col + s.cout > t.dim(1) || o.time_col % 4 != 0 || t.dim(1) % 4 != 0 ||
      (reinterpret_cast<uintptr_t>(t.raw()) & 7u) != 0) {
    return Tensor();
  }
  if (!resblock_persistent_supported(s, dtype_) || !resblock_persistent_device_ok(device_)) return Tensor();
  for (const Tensor* p : {&o.x, &o.skip, &o.w1, &o.w2, &o.shortcut_w}) {
    if (p->defined() && !aligned16(*p)) return Tensor();
  }
  for (const Tensor* p : {&o.x, &o.skip, &o.temb_all, &o.gamma1, &o.beta1, &o.w1, &o.gamma2, &o.beta2, &o.w2, &o.b2,
                          &o.shortcut_w, &o.shortcut_b}) {
    if (p->defined()) check_on_device(*p, "resnet_block");
  }
  Tensor y = empty({s.b, s.h, s.w, s.cout}, dtype_);
  Tensor xn = empty({s.b, s.h, s.w, cin}, dtype_);     // silu(gn1(in))
  Tensor hn = empty({s.b, s.h, s.w, s.cout}, dtype_);  // silu(gn2(h))
  Tensor partial = empty({static_cast<int64_t>(resblock_partial_floats(device_))}, DType::kF32);
  ResblockOperands ops;
  ops.x = x.raw(), ops.skip = has_skip ? o.skip.raw() : nullptr;
  ops.temb = t.raw(), ops.temb_stride = t.dim(1), ops.temb_col = o.time_col;
  ops.gamma1 = o.gamma1.raw(), ops.beta1 = o.beta1.raw(), ops.w1 = o.w1.raw();
  ops.gamma2 = o.gamma2.raw(), ops.beta2 = o.beta2.raw(), ops.w2 = o.w2.raw(), ops.b2 = o.b2.raw();
  ops.ws = s.has_shortcut ? o.shortcut_w.raw() : nullptr, ops.bs = s.has_shortcut ? o.shortcut_b.raw() : nullptr;
  ops.eps = o.eps;
  ops.y = y.raw(), ops.xn = xn.raw(), ops.hn = hn.raw(), ops.partial = partial.data<float>();
  ops.barrier = grid_barrier_;
  activate();
  if (!launch_resblock_persistent(ops, dtype_, s, device_, stream_)) return Tensor();
  return y;
}

}  // namespace sd::cuda
