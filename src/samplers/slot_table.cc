// SlotUpdateTable: packs per-image rows of StepPlans into Backend::slot_update's address
// table and coefficient block (guidance weights folded in, unused inputs left absent), and
// runs it eagerly for callers outside a captured graph.
#include "samplers/slot_table.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace sd {

void* row_address(const Tensor& t, int64_t r) {
  SD_ASSERT(t.defined() && t.ndim() >= 1 && r >= 0 && r < t.dim(0), "row_address: row " + std::to_string(r) + " of " + t.describe());
  return static_cast<char*>(t.raw()) + static_cast<size_t>(r) * (t.nbytes() / static_cast<size_t>(t.dim(0)));
}

SlotUpdateTable::SlotUpdateTable(int64_t rows, bool direct_model_outputs)
    : rows_(rows), direct_(direct_model_outputs), columns_((direct_model_outputs ? kInputs - 2 : kInputs) + kOutputs) {
  table_ = Tensor::zeros_host({rows, columns_}, DType::kI64);
  coeffs_ = Tensor::zeros_host({rows, kOutputs, kInputs}, DType::kF32);
}

void SlotUpdateTable::set_row(int64_t r, const SlotRow& row) {
  SD_ASSERT(r >= 0 && r < rows_, "SlotUpdateTable: row " + std::to_string(r) + " of " + std::to_string(rows_));
  SD_ASSERT(row.plan != nullptr, "SlotUpdateTable: row without a plan");
  const StepPlan& plan = *row.plan;
  SD_ASSERT(plan.outputs.size() <= static_cast<size_t>(kOutputs), "SlotUpdateTable: too many plan outputs");
  float* c = coeffs_.f32() + r * kOutputs * kInputs;  // [kOutputs, kInputs]
  int64_t* t = table_.data<int64_t>() + r * columns_;
  std::fill(c, c + kOutputs * kInputs, 0.0f);
  std::fill(t, t + columns_, int64_t{0});
  const int first_input_column = direct_ ? 2 : 0;  // uncond and cond are direct inputs, not in the table
  const int first_output_column = kInputs - first_input_column;
  bool used[kInputs] = {};
  for (size_t j = 0; j < plan.outputs.size(); ++j) {
    const StepPlan::Output& o = plan.outputs[j];
    SD_ASSERT(o.slot >= 0 && o.slot < StepPlan::kMaxSlots && row.slots[static_cast<size_t>(o.slot)] != nullptr,
              "SlotUpdateTable: plan writes slot " + std::to_string(o.slot) + " which the row does not have");
    for (size_t k = 0; k < j; ++k) SD_ASSERT(plan.outputs[k].slot != o.slot, "SlotUpdateTable: a slot written twice");
    double w[kInputs] = {};
    w[kUncond] = o.model_out * row.uncond_weight;
    w[kCond] = o.model_out * row.cond_weight;
    w[kNoise] = o.noise;
    for (int s = 0; s < StepPlan::kMaxSlots; ++s) w[kFirstSlot + s] = o.slots[static_cast<size_t>(s)];
    for (int i = 0; i < kInputs; ++i) {
      SD_ASSERT(std::isfinite(w[i]), "SlotUpdateTable: coefficient is not finite");
      const float f = static_cast<float>(w[i]);
      c[j * kInputs + i] = f;
      if (f != 0.0f) used[i] = true;
    }
    t[first_output_column + static_cast<int>(j)] =
        static_cast<int64_t>(reinterpret_cast<uintptr_t>(row.slots[static_cast<size_t>(o.slot)]));
  }
  const void* address[kInputs] = {row.uncond, row.cond, row.noise};
  for (int s = 0; s < StepPlan::kMaxSlots; ++s) address[kFirstSlot + s] = row.slots[static_cast<size_t>(s)];
  for (int i = first_input_column; i < kInputs; ++i) {
    if (!used[i]) continue;
    SD_ASSERT(address[i] != nullptr, "SlotUpdateTable: input column " + std::to_string(i) + " is used but has no address");
    t[i - first_input_column] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(address[i]));
  }
}

void SlotUpdateTable::apply(Backend& backend, const std::vector<Tensor>& direct, int64_t row_elems, DType dtype) const {
  SD_ASSERT(direct.size() == (direct_ ? 2u : 0u), "SlotUpdateTable::apply: wrong number of direct inputs");
  if (rows_ == 0) return;
  const Tensor table = backend.upload(table_, DType::kI64);
  const Tensor coeffs = backend.upload(coeffs_, DType::kF32);
  backend.slot_update(direct, table, coeffs, row_elems, dtype);
}

}  // namespace sd
