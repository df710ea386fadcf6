// Host-side launchers of the small CUDA kernels that C++ files (memory ops, conv2d) need;
// each enqueues on the given stream and throws sd::Error if the launch fails.
// Pointers are device pointers; `n` counts elements.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tensor/tensor.h"

namespace sd::cuda {

// dst[i] = (dst dtype) src[i] for float dtypes f32/f16/bf16 in any combination.
void launch_convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream);

// dst[i] = Backend::to_pixels_u8 of src[i] (a float dtype) as u8.
void launch_pixels_u8(const void* src, DType src_dtype, void* dst, int64_t n, cudaStream_t stream);

// y[b, p, c] += bias[c] + row[b, c] + residual[b, p, c] for y [B, P, C] (in place, one pass);
// bias [C], row [B, C], residual like y, each may be null; all of one float dtype.
void launch_add_epilogue(void* y, const void* bias, const void* row, const void* residual, DType dtype,
                         int64_t batch, int64_t positions, int64_t channels, cudaStream_t stream);
// y[r, c] += bias[c] for y [rows, C] (in place), same float dtype.
void launch_add_bias_rows(void* y, const void* bias, DType dtype, int64_t rows, int64_t channels,
                          cudaStream_t stream);

}  // namespace sd::cuda

namespace sd::cuda {

// Direct convolution (one thread per output element, f32 accumulation): the fallback for
// shapes cuDNN has no algorithm for. x [B,H,W,Cin], w [Cout,k,k,Cin] -> y [B,Ho,Wo,Cout].
struct ConvDims {
  int64_t b, h, w, cin, cout, k, ho, wo;
  int stride, padding;
};
void launch_conv2d_direct(const void* x, const void* w, void* y, DType dtype, const ConvDims& d, cudaStream_t stream);

// 3x3 stride-1 padding-1 convolutions with Cout <= 8 and Cin % 16 == 0 on mma.sync, up to 32768
// output positions (conv_thin.cu): x [B, H, W, Cin], w [Cout, 3, 3, Cin], bias [Cout] or null
// -> y [B, H, W, Cout].
bool conv3x3_thin_out_applies(int64_t positions, int64_t cin, int64_t cout, int64_t k, int stride, int padding);
void launch_conv3x3_thin_out(const void* x, const void* w, const void* bias, void* y, DType dtype, int64_t batch,
                             int64_t h, int64_t wd, int64_t cin, int64_t cout, cudaStream_t stream);

}  // namespace sd::cuda
