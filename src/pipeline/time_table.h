// TimeTable: the UNet's time projections (UNet::time_projections) per timestep value, kept in
// a device table that captured steps gather from (Backend::embedding). The time embedding
// depends on the timestep alone, so a job's whole schedule costs one small GEMM when it starts
// instead of five weight-bound ops in every step; rows are reused least recently used first.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "backend/backend.h"
#include "models/unet.h"

namespace sd {

class TimeTable {
 public:
  static constexpr int kRows = 512;  // 20 MB at SD 1.5's 20160 projection columns in f16

  // unet.time_projection_width() must be > 0.
  TimeTable(Backend& backend, const UNet& unet);

  // The table rows holding the projections of `now` (one per value, computed where missing),
  // after also computing what is missing of `later` (e.g. a new job's whole schedule) as far
  // as rows not needed by `now` allow. Enqueues device work (eager: never inside capture()).
  std::vector<int32_t> rows_for(const std::vector<double>& now, const std::vector<double>& later);

  const Tensor& table() const { return rows_; }  // [kRows, width] device; never reallocated
  int64_t computed() const { return computed_; }  // timestep values projected so far

 private:
  Backend& backend_;
  const UNet& unet_;
  Tensor rows_;
  std::map<double, int> row_of_;
  std::vector<double> value_;     // per row: its timestep value (meaningless where !filled_)
  std::vector<char> filled_;      // per row
  std::vector<uint64_t> used_;    // per row: the call that last needed or filled it
  uint64_t clock_ = 0;
  int64_t computed_ = 0;
};

}  // namespace sd
