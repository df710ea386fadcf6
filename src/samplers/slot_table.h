// SlotUpdateTable: the host side of Backend::slot_update for a batch of images of many
// requests: per row (one image) the addresses of its inputs and outputs and the coefficients
// of its request's StepPlan, with classifier-free guidance folded into the coefficients.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "samplers/sampler.h"

namespace sd {

// One image's share of a batched update.
struct SlotRow {
  const StepPlan* plan = nullptr;
  // guided = uncond_weight * uncond + cond_weight * cond (no guidance: 0 and 1).
  double uncond_weight = 0, cond_weight = 1;
  // Row addresses (device) of this image's model outputs; only when the table addresses them
  // (model outputs not direct). nullptr where the weight is 0.
  const void* uncond = nullptr;
  const void* cond = nullptr;
  const void* noise = nullptr;                      // fresh noise, when plan->draws_noise
  std::array<void*, StepPlan::kMaxSlots> slots{};  // the request's state slots, this image's row
};

class SlotUpdateTable {
 public:
  // Input columns (coefficient order): uncond, cond, noise, state slots; then the outputs.
  static constexpr int kUncond = 0, kCond = 1, kNoise = 2, kFirstSlot = 3;
  static constexpr int kInputs = kFirstSlot + StepPlan::kMaxSlots;
  static constexpr int kOutputs = StepPlan::kMaxOutputs;
  static_assert(kInputs <= Backend::kSlotUpdateMaxInputs && kOutputs <= Backend::kSlotUpdateMaxOutputs);

  // `rows` rows, all absent (nothing written) until set. With `direct_model_outputs` the
  // uncond and cond predictions are the op's two direct inputs (rows of the UNet output, as
  // in a captured graph) instead of table addresses.
  SlotUpdateTable(int64_t rows, bool direct_model_outputs);

  void set_row(int64_t r, const SlotRow& row);

  int64_t rows() const { return rows_; }
  const Tensor& table() const { return table_; }    // host i64 [R, columns]
  const Tensor& coeffs() const { return coeffs_; }  // host f32 [R, kOutputs, kInputs]

  // Uploads the table and coefficients and runs Backend::slot_update eagerly; `direct` is
  // {uncond rows, cond rows} ([R, ...] each) with direct_model_outputs, else empty.
  void apply(Backend& backend, const std::vector<Tensor>& direct, int64_t row_elems, DType dtype) const;

 private:
  int64_t rows_;
  bool direct_;
  int columns_;
  Tensor table_, coeffs_;
};

// Address of row `r` of `t` viewed as [rows, row_elems] (device or host).
void* row_address(const Tensor& t, int64_t r);

}  // namespace sd
