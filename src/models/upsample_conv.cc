// UpsampleConv: load-time derivation of the sub-pixel phase kernels from the stored 3x3 kernel,
// and the forward pass (Backend::conv2d_subpixel_upsample: by default one 2x2 conv with padding 1
// into [B, H+1, W+1, 4*out], then interleave_phases2x), with upsample-then-conv for odd sizes.
#include "models/upsample_conv.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace sd {

Tensor subpixel_phase_weights(const Tensor& w_oihw) {
  SD_ASSERT(w_oihw.ndim() == 4 && w_oihw.dim(2) == 3 && w_oihw.dim(3) == 3,
            "subpixel_phase_weights: w must be [out, in, 3, 3], got " + w_oihw.describe());
  const Tensor w = to_f32_host(w_oihw);
  const int64_t out = w.dim(0), in = w.dim(1);
  Tensor p = Tensor::empty_host({4 * out, 2, 2, in}, DType::kF32);  // [4*out, 2, 2, in]
  const auto phases_of = [&](int64_t o0, int64_t o1) {  // output channels [o0, o1)
    for (int64_t o = o0; o < o1; ++o)
      for (int64_t i = 0; i < in; ++i) {
        const float* k = w.f32() + (o * in + i) * 9;  // [3, 3]
        // rows[a][r2][s]: the 3x3 rows that output-row parity a sums into 2x2 row r2, column s.
        double rows[2][2][3];
        for (int s = 0; s < 3; ++s) {
          rows[0][0][s] = k[s];
          rows[0][1][s] = double{k[3 + s]} + k[6 + s];
          rows[1][0][s] = double{k[s]} + k[3 + s];
          rows[1][1][s] = k[6 + s];
        }
        for (int a = 0; a < 2; ++a)
          for (int r2 = 0; r2 < 2; ++r2) {
            const double* r = rows[a][r2];
            const double cols[2][2] = {{r[0], r[1] + r[2]}, {r[0] + r[1], r[2]}};  // [column parity c][s2]
            for (int c = 0; c < 2; ++c)
              for (int s2 = 0; s2 < 2; ++s2)
                p.f32()[((((2 * a + c) * out + o) * 2 + r2) * 2 + s2) * in + i] = static_cast<float>(cols[c][s2]);
          }
      }
  };
  // At load: a 1280-channel layer takes ~0.3 s on one core, so the output channels are split
  // over threads.
  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 16);
  const int64_t chunk = (out + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int64_t o0 = chunk; o0 < out; o0 += chunk) pool.emplace_back(phases_of, o0, std::min(out, o0 + chunk));
  phases_of(0, std::min(out, chunk));
  for (std::thread& t : pool) t.join();
  return p;
}

bool subpixel_upsample_enabled() {
  const char* env = std::getenv("SDSERVE_SUBPIXEL_UPSAMPLE");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

void UpsampleConv::load(ModelLoader& l, const std::string& prefix, int64_t channels, bool keep_3x3) {
  const bool subpixel = subpixel_upsample_enabled();
  conv = Conv2d();
  w_phases = Tensor();
  if (!subpixel) {
    conv.load(l, prefix, channels, channels, 3);
    bias = conv.b;
    return;
  }
  const Tensor host = l.conv_weight_host(prefix + ".weight", channels, channels, 3);  // [out, in, 3, 3]
  bias = l.vector(prefix + ".bias", channels);
  if (!host.defined()) return;  // recording mode or a failed load (kept in l.status())
  Backend& be = l.backend();
  w_phases = be.upload(subpixel_phase_weights(host));  // [4*out, 2, 2, in]
  if (keep_3x3) {
    conv.w = be.upload(nchw_to_nhwc(host));  // [out, 3, 3, in]
    conv.b = bias;
    conv.stride = 1;
    conv.padding = 1;
  }
}

Tensor UpsampleConv::operator()(Backend& be, const Tensor& x, int64_t out_h, int64_t out_w) const {
  SD_ASSERT(x.ndim() == 4, "UpsampleConv: x must be [B, H, W, C], got " + x.describe());
  const bool exact2x = out_h == 2 * x.dim(1) && out_w == 2 * x.dim(2);
  if (w_phases.defined() && exact2x) {
    return be.conv2d_subpixel_upsample(x, w_phases, bias);  // [B, 2H, 2W, out]
  }
  SD_ASSERT(conv.w.defined(), "UpsampleConv: odd target size " + std::to_string(out_h) + "x" + std::to_string(out_w) +
                                  " for " + x.describe() + " needs the 3x3 weights (load with keep_3x3)");
  return conv(be, upsample_to(be, x, out_h, out_w));
}

}  // namespace sd
