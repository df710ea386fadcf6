// TimeTable (time_table.h): finds or fills the rows of a step's timestep values, filling free
// rows first, then the least recently used ones; one time_projections() call per fill.
#include "pipeline/time_table.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <string>

namespace sd {

TimeTable::TimeTable(Backend& backend, const UNet& unet)
    : backend_(backend), unet_(unet), value_(kRows, 0.0), filled_(kRows, 0), used_(kRows, 0) {
  const int64_t width = unet.time_projection_width();
  SD_ASSERT(width > 0, "TimeTable: the UNet's time projections are not stacked");
  rows_ = backend.empty({kRows, width}, backend.compute_dtype());  // [kRows, width]; rows are filled before use
}

std::vector<int32_t> TimeTable::rows_for(const std::vector<double>& now, const std::vector<double>& later) {
  SD_ASSERT(static_cast<int>(now.size()) <= kRows / 2, "TimeTable: more rows in one step than the table holds");
  ++clock_;
  std::vector<char> pinned(kRows, 0);  // rows `now` needs: never refilled in this call
  std::vector<double> fresh;           // values to project: missing ones of `now` first
  std::set<double> seen;
  for (double v : now) {
    SD_ASSERT(std::isfinite(v), "TimeTable: timestep " + std::to_string(v));
    if (auto it = row_of_.find(v); it != row_of_.end()) {
      pinned[static_cast<size_t>(it->second)] = 1;
      used_[static_cast<size_t>(it->second)] = clock_;
    } else if (seen.insert(v).second) {
      fresh.push_back(v);
    }
  }
  const size_t must = fresh.size();
  for (double v : later) {
    if (fresh.size() >= static_cast<size_t>(kRows / 2)) break;  // a schedule longer than half the table: on demand
    if (std::isfinite(v) && !row_of_.count(v) && seen.insert(v).second) fresh.push_back(v);
  }
  // Rows to fill: free ones, then the least recently used; never a pinned one.
  std::vector<int> order;
  for (int r = 0; r < kRows; ++r) {
    if (!pinned[static_cast<size_t>(r)]) order.push_back(r);
  }
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const auto key = [&](int r) { return filled_[static_cast<size_t>(r)] ? used_[static_cast<size_t>(r)] + 1 : 0; };
    return key(a) < key(b);
  });
  fresh.resize(std::min(fresh.size(), order.size()));
  SD_ASSERT(fresh.size() >= must, "TimeTable: no free rows for this step");
  if (!fresh.empty()) {
    const int64_t n = static_cast<int64_t>(fresh.size());
    const Tensor projections = unet_.time_projections(backend_.upload(unet_.timestep_features_of(fresh)));  // [n, width]
    for (int64_t i = 0; i < n; ++i) {
      const size_t r = static_cast<size_t>(order[static_cast<size_t>(i)]);
      if (filled_[r]) row_of_.erase(value_[r]);
      value_[r] = fresh[static_cast<size_t>(i)];
      filled_[r] = 1;
      used_[r] = clock_;
      row_of_[value_[r]] = static_cast<int>(r);
      backend_.copy(projections.slice_rows(i, i + 1), rows_.slice_rows(static_cast<int64_t>(r), static_cast<int64_t>(r) + 1));
    }
    computed_ += n;
  }
  std::vector<int32_t> out;
  out.reserve(now.size());
  for (double v : now) out.push_back(static_cast<int32_t>(row_of_.at(v)));
  return out;
}

}  // namespace sd
