// A linear combination of same-shaped tensors, sum_i c_i * t_i, evaluated in one
// Backend::lincomb call with the same coefficients for every batch row. Coefficients are
// computed in double by the samplers and rounded to f32 only here.
#pragma once

#include <vector>

#include "backend/backend.h"

namespace sd {

class LinearCombination {
 public:
  LinearCombination& add(const Tensor& t, double coeff);
  Tensor eval(Backend& backend) const;

 private:
  std::vector<Tensor> terms_;
  std::vector<double> coeffs_;
};

}  // namespace sd
