// Portable default of Backend::slot_update (the batched guidance + sampler step): a host
// loop where device memory is host memory (the CPU backend), otherwise per-row lincombs over
// views of the addressed rows after downloading the table and coefficients (eager only).
#include <cstring>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace sd {
namespace {

struct SlotUpdateShape {
  int64_t rows = 0;
  int n_in = 0, n_out = 0, n_direct = 0, columns = 0;
};

SlotUpdateShape check_slot_update(const std::vector<Tensor>& direct, const Tensor& table, const Tensor& coeffs,
                                  int64_t row_elems, DType dtype) {
  SD_ASSERT(table.defined() && coeffs.defined(), "slot_update: table or coeffs undefined");
  SD_ASSERT(table.dtype() == DType::kI64 && table.ndim() == 2, "slot_update: table must be i64 [R, cols], got " + table.describe());
  SD_ASSERT(coeffs.dtype() == DType::kF32 && coeffs.ndim() == 3, "slot_update: coeffs must be f32 [R, n_out, n_in], got " + coeffs.describe());
  SlotUpdateShape s;
  s.rows = coeffs.dim(0);
  s.n_out = static_cast<int>(coeffs.dim(1));
  s.n_in = static_cast<int>(coeffs.dim(2));
  s.n_direct = static_cast<int>(direct.size());
  s.columns = static_cast<int>(table.dim(1));
  SD_ASSERT(table.dim(0) == s.rows, "slot_update: table " + table.describe() + " vs coeffs " + coeffs.describe());
  SD_ASSERT(s.n_in >= s.n_direct && s.n_in <= Backend::kSlotUpdateMaxInputs && s.n_out >= 1 &&
                s.n_out <= Backend::kSlotUpdateMaxOutputs && s.n_direct <= Backend::kSlotUpdateMaxDirect,
            "slot_update: " + std::to_string(s.n_in) + " inputs (" + std::to_string(s.n_direct) + " direct), " +
                std::to_string(s.n_out) + " outputs exceed the limits");
  SD_ASSERT(s.columns == s.n_in - s.n_direct + s.n_out, "slot_update: table " + table.describe() + " for " +
                                                            std::to_string(s.n_in) + " inputs (" + std::to_string(s.n_direct) +
                                                            " direct) and " + std::to_string(s.n_out) + " outputs");
  SD_ASSERT(row_elems > 0, "slot_update: row_elems must be positive");
  for (const Tensor& d : direct) {
    SD_ASSERT(d.defined() && d.dtype() == dtype && d.numel() == s.rows * row_elems,
              "slot_update: direct input " + d.describe() + " for " + std::to_string(s.rows) + " rows of " +
                  std::to_string(row_elems) + " " + dtype_name(dtype));
  }
  return s;
}

}  // namespace

void Backend::slot_update(const std::vector<Tensor>& direct, const Tensor& table, const Tensor& coeffs,
                          int64_t row_elems, DType dtype) {
  const SlotUpdateShape s = check_slot_update(direct, table, coeffs, row_elems, dtype);
  if (device().is_cpu()) {
    // Host memory: every address is dereferenceable here.
    SD_ASSERT(dtype == DType::kF32, std::string("slot_update on the host needs f32 rows, got ") + dtype_name(dtype));
    const int64_t* tab = table.data<int64_t>();
    const float* c = coeffs.data<float>();
    for (int64_t r = 0; r < s.rows; ++r) {
      const int64_t* trow = tab + r * s.columns;
      const float* in[kSlotUpdateMaxInputs] = {};
      float* out[kSlotUpdateMaxOutputs] = {};
      for (int i = 0; i < s.n_in; ++i) {
        in[i] = i < s.n_direct ? direct[static_cast<size_t>(i)].data<float>() + r * row_elems
                               : reinterpret_cast<const float*>(trow[i - s.n_direct]);
      }
      for (int j = 0; j < s.n_out; ++j) out[j] = reinterpret_cast<float*>(trow[s.n_in - s.n_direct + j]);
      const float* cr = c + r * s.n_out * s.n_in;  // [n_out, n_in]
      float v[kSlotUpdateMaxInputs];
      for (int64_t e = 0; e < row_elems; ++e) {
        for (int i = 0; i < s.n_in; ++i) v[i] = in[i] ? in[i][e] : 0.0f;
        for (int j = 0; j < s.n_out; ++j) {
          if (!out[j]) continue;
          float acc = 0.0f;
          for (int i = 0; i < s.n_in; ++i) acc += cr[j * s.n_in + i] * v[i];
          out[j][e] = acc;
        }
      }
    }
    return;
  }
  // Any other device: views of the addressed rows, lincomb per output, outputs written after
  // all of a row's outputs are computed (so in-place rows read their old values).
  const Tensor tab = download(table);
  const Tensor c = download(coeffs);
  const size_t row_bytes = static_cast<size_t>(row_elems) * dtype_size(dtype);
  auto view = [&](int64_t address) {
    auto storage = std::make_shared<Storage>(reinterpret_cast<void*>(address), row_bytes, device(), nullptr);
    return Tensor(storage, 0, {1, row_elems}, dtype);
  };
  for (int64_t r = 0; r < s.rows; ++r) {
    const int64_t* trow = tab.data<int64_t>() + r * s.columns;
    std::vector<Tensor> in(static_cast<size_t>(s.n_in));
    for (int i = 0; i < s.n_in; ++i) {
      if (i < s.n_direct) {
        in[static_cast<size_t>(i)] = direct[static_cast<size_t>(i)].reshape({s.rows, row_elems}).slice_rows(r, r + 1);
      } else if (trow[i - s.n_direct] != 0) {
        in[static_cast<size_t>(i)] = view(trow[i - s.n_direct]);
      }
    }
    std::vector<std::pair<Tensor, Tensor>> results;  // (value, destination)
    for (int j = 0; j < s.n_out; ++j) {
      const int64_t dst = trow[s.n_in - s.n_direct + j];
      if (dst == 0) continue;
      std::vector<Tensor> terms;
      std::vector<float> weights;
      for (int i = 0; i < s.n_in; ++i) {
        if (!in[static_cast<size_t>(i)].defined()) continue;
        terms.push_back(in[static_cast<size_t>(i)]);
        weights.push_back(c.f32()[(r * s.n_out + j) * s.n_in + i]);
      }
      Tensor value;
      if (terms.empty()) {
        value = upload(Tensor::zeros_host({1, row_elems}, DType::kF32), dtype);
      } else {
        value = lincomb(terms, Tensor::from_vector({1, static_cast<int64_t>(weights.size())}, weights));
      }
      results.emplace_back(value, view(dst));
    }
    for (const auto& [value, dst] : results) copy(value, dst);
  }
}

}  // namespace sd
