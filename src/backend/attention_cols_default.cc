// Portable default of Backend::attention_cols (attention on column windows of packed QKV / KV
// projections): each window is gathered into a contiguous tensor with embedding() over rows
// of gcd(width, offsets) elements, then attention() runs on the copies. Eager only (uploads ids).
#include <numeric>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/column_window.h"

namespace sd {

// src [B, L, W] -> src[..., col : col + width] as a contiguous [B, L, width] tensor on `be`.
// The rows of `src` are cut into chunks of g = gcd(W, col, width) elements (a table
// [B*L*W/g, g]); the window is chunks col/g .. (col+width)/g - 1 of every row.
Tensor gather_columns(Backend& be, const Tensor& src, int64_t col, int64_t width) {
  const int64_t B = src.dim(0), L = src.dim(1), W = src.dim(2);
  const int64_t g = std::gcd(std::gcd(W, col), width);
  const int64_t chunks_per_row = W / g, window_chunks = width / g, rows = B * L;
  SD_ASSERT(rows * chunks_per_row < (int64_t{1} << 31),
            "gather_columns: " + src.describe() + " has too many chunks for i32 gather ids");
  Tensor ids = Tensor::empty_host({1, rows * window_chunks}, DType::kI32);  // [1, B*L*width/g]
  int32_t* id = ids.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < window_chunks; ++j) {
      id[r * window_chunks + j] = static_cast<int32_t>(r * chunks_per_row + col / g + j);
    }
  }
  const Tensor table = src.reshape({rows * chunks_per_row, g});  // [B*L*W/g, g]
  return be.embedding(be.upload(ids, DType::kI32), table).reshape({B, L, width});
}


Tensor Backend::attention_cols(const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col,
                               int64_t v_col, int64_t inner, int heads, bool causal) {
  SD_ASSERT(q_src.defined() && kv_src.defined() && q_src.ndim() == 3 && kv_src.ndim() == 3 &&
                q_src.dim(0) == kv_src.dim(0) && inner > 0 && heads > 0 && inner % heads == 0 && q_col >= 0 &&
                k_col >= 0 && v_col >= 0 && q_col + inner <= q_src.dim(2) && k_col + inner <= kv_src.dim(2) &&
                v_col + inner <= kv_src.dim(2),
            "attention_cols: q_src " + q_src.describe() + " col " + std::to_string(q_col) + ", kv_src " +
                kv_src.describe() + " cols " + std::to_string(k_col) + "/" + std::to_string(v_col) + ", inner " +
                std::to_string(inner) + ", heads " + std::to_string(heads));
  const Tensor q = gather_columns(*this, q_src, q_col, inner);   // [B, Lq, inner]
  const Tensor k = gather_columns(*this, kv_src, k_col, inner);  // [B, Lk, inner]
  const Tensor v = gather_columns(*this, kv_src, v_col, inner);  // [B, Lk, inner]
  return attention(q, k, v, heads, causal);
}

}  // namespace sd
