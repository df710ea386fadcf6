// PromptCache: a short list searched linearly (a few dozen entries of 2 x 77 token ids), moved
// to the front on every hit, trimmed from the back on insertion.
#include "pipeline/prompt_cache.h"

#include <algorithm>

namespace sd {

std::vector<int32_t> PromptCache::key_of(const Tensor& ids) {
  SD_ASSERT(ids.defined() && ids.dtype() == DType::kI32 && ids.device().is_cpu(), "PromptCache: host i32 ids");
  return std::vector<int32_t>(ids.i32(), ids.i32() + ids.numel());
}

Tensor PromptCache::find(const Tensor& ids, int clip_skip) {
  if (capacity_ == 0) return Tensor();
  const std::vector<int32_t> key = key_of(ids);
  const auto it = std::find_if(entries_.begin(), entries_.end(),
                               [&](const Entry& e) { return e.clip_skip == clip_skip && e.ids == key; });
  if (it == entries_.end()) return Tensor();
  entries_.splice(entries_.begin(), entries_, it);
  ++hits_;
  return entries_.front().context;
}

void PromptCache::put(const Tensor& ids, int clip_skip, const Tensor& context) {
  if (capacity_ == 0) return;
  entries_.push_front(Entry{key_of(ids), clip_skip, context});
  while (entries_.size() > capacity_) entries_.pop_back();
}

}  // namespace sd
