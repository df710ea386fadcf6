// Op-parity case table shared by every backend test: named op invocations with seeded random
// host inputs, a naive plain-loop reference (f64 accumulation, independent of any backend)
// and a runner that executes the op on any sd::Backend and measures the error.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "tensor/tensor.h"

namespace sd::testing {

struct OpCase {
  std::string name;  // "conv2d_3x3_s2_p1_odd", unique
  std::string op;    // backend op name: "conv2d", "attention", ...
  // Host inputs: f32 (uploaded in the backend's compute dtype) or i32 (uploaded as i32).
  std::vector<Tensor> inputs;
  // Runs the op on `backend`: `device_inputs` are `inputs` uploaded, `host_inputs` the
  // originals (for host-side arguments such as lincomb's coefficients). Returns a device tensor.
  std::function<Tensor(Backend& backend, const std::vector<Tensor>& device_inputs,
                       const std::vector<Tensor>& host_inputs)>
      run;
  // Naive reference on the host inputs: f32 host tensor of the expected output shape.
  std::function<Tensor(const std::vector<Tensor>& host_inputs)> reference;
  // Suggested tolerances on the relative L2 error: f32 backends, and f16/bf16 compute
  // (inputs quantised too). GPU tests may loosen the half one per case.
  double rel_tol_f32 = 1e-5;
  double rel_tol_half = 5e-3;
};

struct OpResult {
  bool shape_ok = false;
  Shape got_shape;
  Shape want_shape;
  double max_abs = 0;  // max |got - want|
  double rel_l2 = 0;   // ||got - want|| / ||want||
  std::string summary() const;  // "shape [..] ok, max_abs 1e-7, rel_l2 3e-8"
};

// Every case, in a fixed order with fixed seeds.
std::vector<OpCase> all_op_cases();

// Uploads the inputs, runs the op, downloads the result and compares it with the reference.
OpResult run_case(const OpCase& c, Backend& backend);

// Seeded uniform random f32 host tensor in [lo, hi).
Tensor random_tensor(const Shape& shape, uint32_t seed, float lo = -1.f, float hi = 1.f);

}  // namespace sd::testing
