// PromptCache: the text encoder's output for recently seen token rows (negative prompt and
// prompt, clip_skip), least recently used out first. Requests that repeat a prompt pair (a
// batch of seeds, a server's shared negative prompt) skip the encoder; the result is the same.
#pragma once

#include <cstdint>
#include <list>
#include <vector>

#include "tensor/tensor.h"

namespace sd {

class PromptCache {
 public:
  explicit PromptCache(size_t capacity) : capacity_(capacity) {}
  // ids: host i32 [2, L] (row 0 negative, row 1 prompt). The cached context [2, L, D] (device),
  // or an undefined tensor. Callers only read the tensors they get (jobs share them).
  Tensor find(const Tensor& ids, int clip_skip);
  void put(const Tensor& ids, int clip_skip, const Tensor& context);
  size_t size() const { return entries_.size(); }
  int64_t hits() const { return hits_; }

 private:
  struct Entry {
    std::vector<int32_t> ids;
    int clip_skip;
    Tensor context;
  };
  static std::vector<int32_t> key_of(const Tensor& ids);
  size_t capacity_;
  std::list<Entry> entries_;  // most recently used first
  int64_t hits_ = 0;
};

}  // namespace sd
