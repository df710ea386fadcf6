// Lists of image sizes as users write them on command lines: "512x512,768x512" (spaces around
// items and an upper-case X accepted). Syntax only: each caller checks the sides against its own
// limits (`serve --warmup-sizes` as a request's width / height, `loadtest --sizes` 8..16384).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace sd {

struct ImageSize {
  int width = 0, height = 0;
  bool operator==(const ImageSize&) const = default;
};

// WIDTHxHEIGHT items separated by commas, in order, a repeated size kept once. An empty list, an
// empty item or one that is not two decimal integers around an 'x' fails, naming the item.
StatusOr<std::vector<ImageSize>> parse_size_list(const std::string& list);

std::string size_name(const ImageSize& size);  // "768x512"

}  // namespace sd
