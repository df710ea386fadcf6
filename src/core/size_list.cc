// parse_size_list: comma-separated WIDTHxHEIGHT items, decimal sides parsed with from_chars (no
// signs, no trailing characters), trimmed of spaces and tabs; repeats dropped. Used by
// `serve --warmup-sizes` (pipeline/warmup.h) and `loadtest --sizes`.
#include "core/size_list.h"

#include <algorithm>
#include <charconv>

namespace sd {

StatusOr<std::vector<ImageSize>> parse_size_list(const std::string& list) {
  std::vector<ImageSize> out;
  size_t begin = 0;
  while (true) {
    const size_t end = std::min(list.find(',', begin), list.size());
    std::string item = list.substr(begin, end - begin);
    item.erase(0, std::min(item.size(), item.find_first_not_of(" \t")));
    item.erase(item.find_last_not_of(" \t") + 1);
    std::replace(item.begin(), item.end(), 'X', 'x');
    const size_t x = item.find('x');
    ImageSize size;
    const auto side = [&](size_t from, size_t to, int* v) {
      const char* last = item.data() + to;
      const auto [ptr, ec] = std::from_chars(item.data() + from, last, *v);
      return from < to && ec == std::errc() && ptr == last;
    };
    if (x == std::string::npos || !side(0, x, &size.width) || !side(x + 1, item.size(), &size.height)) {
      return InvalidArgument("image size '" + item + "' is not WIDTHxHEIGHT (e.g. 512x512 or 768x512)");
    }
    if (std::find(out.begin(), out.end(), size) == out.end()) out.push_back(size);
    if (end == list.size()) break;
    begin = end + 1;
  }
  return out;
}

std::string size_name(const ImageSize& size) { return std::to_string(size.width) + "x" + std::to_string(size.height); }

}  // namespace sd
