// A small structural HTML checker for the report tests: one <html> element, tags properly
// nested (void elements excepted), no scripts and no external references (src=, href=,
// <link>, url(), @import). Returns "" when the document passes, else the first problem.
#pragma once

#include <string>

namespace sd::loadtest::testing {

std::string check_self_contained_html(const std::string& html);
int count_occurrences(const std::string& text, const std::string& needle);

}  // namespace sd::loadtest::testing
