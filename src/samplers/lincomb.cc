// LinearCombination: collects (tensor, coefficient) terms and evaluates them with one
// Backend::lincomb; the coefficient table is host f32 [B, n] with identical rows (one
// request shares its schedule across its images).
#include "samplers/lincomb.h"

#include <cmath>

namespace sd {

LinearCombination& LinearCombination::add(const Tensor& t, double coeff) {
  SD_ASSERT(t.defined(), "lincomb term is undefined");
  SD_ASSERT(std::isfinite(coeff), "lincomb coefficient is not finite");
  if (!terms_.empty()) SD_ASSERT(t.shape() == terms_.front().shape(), "lincomb terms differ in shape");
  terms_.push_back(t);
  coeffs_.push_back(coeff);
  return *this;
}

Tensor LinearCombination::eval(Backend& backend) const {
  SD_ASSERT(!terms_.empty(), "empty linear combination");
  const int64_t batch = terms_.front().dim(0);
  const int64_t n = static_cast<int64_t>(terms_.size());
  Tensor coeffs = Tensor::empty_host({batch, n}, DType::kF32);  // [B, n]
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < n; ++i) coeffs.f32()[b * n + i] = static_cast<float>(coeffs_[static_cast<size_t>(i)]);
  }
  return backend.lincomb(terms_, coeffs);
}

}  // namespace sd
