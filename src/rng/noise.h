// Seeded Gaussian noise that reproduces the reference framework (PyTorch) bit for bit:
// its CPU generator (mt19937) and its CUDA generator (Philox4x32-10, computed here on the
// host, or on the GPU through Backend::randn_philox). One generator per image; each draw
// continues the stream like torch's.
#pragma once

#include <cstdint>
#include <memory>

#include "tensor/tensor.h"

namespace sd {

class Backend;

// Which reference generator the noise reproduces. The pipeline maps its request's RngKind
// onto this (rng/ does not depend on pipeline/).
enum class NoiseSource : uint8_t {
  kTorchCpu,   // torch.manual_seed(S); torch.randn(shape)
  // torch.randn(shape, device='cuda', generator=torch.Generator('cuda').manual_seed(S)), as an
  // sm_90 GPU (H100/H200) computes it: within ~2.4e-7 of the device (its hardware __sincosf is
  // modelled to one float ulp); other GPU generations may differ in the last bits.
  kTorchCuda,
};
const char* noise_source_name(NoiseSource source);  // "torch_cpu", "torch_cuda"

// The launch geometry PyTorch computes for CUDA randn. It only matters for tensors of more
// than block_size * sm_count * (max_threads_per_sm / block_size) elements (270336 on an
// H100 with 132 SMs: e.g. one 4x256x264 latent); below that every element comes from its own
// Philox subsequence and the output is the same on every GPU.
struct PhiloxLaunchConfig {
  int sm_count = 132;             // multiProcessorCount of the GPU being imitated (H100 SXM)
  int max_threads_per_sm = 2048;  // maxThreadsPerMultiProcessor
  int block_size = 256;           // PyTorch's block_size_bound
};

class NoiseGenerator {
 public:
  virtual ~NoiseGenerator() = default;
  virtual NoiseSource source() const = 0;
  virtual uint64_t seed() const = 0;
  // Fills out[0..n) with what randn of a contiguous f32 tensor of n elements returns next.
  // The result depends only on n (and the stream position), never on the shape.
  virtual void fill_randn(float* out, int64_t n) = 0;
  // Host f32 tensor of `shape` (row-major; NCHW for latents), continuing the stream.
  Tensor randn(const Shape& shape);
  // The same draw of out.numel() values computed on `backend`'s device into `out` (a device
  // tensor, f32/f16/bf16, rounded once to its dtype), continuing the stream exactly as
  // fill_randn does. With nchw_to_nhwc, out is NHWC [B, H, W, C] and the values are drawn in
  // NCHW order [B, C, H, W]. Returns false, touching nothing, when this generator or the
  // backend has no device kernel (callers then use fill_randn and upload; see
  // rng/device_noise.h, which does this).
  virtual bool fill_randn_device(Backend& backend, const Tensor& out, bool nchw_to_nhwc) {
    (void)backend;
    (void)out;
    (void)nchw_to_nhwc;
    return false;
  }
};

// `seed` as torch.manual_seed takes it: the CPU generator uses its low 32 bits (as torch's
// mt19937 does), the CUDA generator all 64.
std::unique_ptr<NoiseGenerator> make_noise_generator(NoiseSource source, uint64_t seed,
                                                     const PhiloxLaunchConfig& launch = {});

}  // namespace sd
