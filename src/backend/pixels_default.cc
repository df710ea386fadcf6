// Portable default of Backend::to_pixels_u8: the decoded image downloaded as f32, each value
// turned into a byte on the host by pixels_u8_value(), and the bytes uploaded as a u8 tensor.
// The CUDA backend converts on the device instead (convert.cu), downloading 4x fewer bytes.
#include "backend/backend.h"

namespace sd {

Tensor Backend::to_pixels_u8(const Tensor& x) {
  const Tensor host = download(x);  // f32, x's shape
  Tensor bytes = Tensor::empty_host(x.shape(), DType::kU8);
  const float* src = host.f32();
  uint8_t* dst = bytes.data<uint8_t>();
  for (int64_t i = 0; i < host.numel(); ++i) dst[i] = pixels_u8_value(src[i]);
  return upload(bytes, DType::kU8);
}

}  // namespace sd
