// Runs the whole op-parity table (op_cases.h) on the CPU backend against the naive
// references, with f32 tolerances. One parameterised test per case so failures name the
// case; the GPU test runs the same table with half-precision tolerances.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>

#include "backend/cpu/cpu_backend.h"
#include "backend/op_cases.h"

namespace sd::testing {
namespace {

class CpuOpParity : public ::testing::TestWithParam<size_t> {
 protected:
  static const std::vector<OpCase>& cases() {
    static const std::vector<OpCase> all = all_op_cases();
    return all;
  }
  static Backend& backend() {
    static std::unique_ptr<Backend> be = cpu::make_backend(0);
    return *be;
  }
};

TEST_P(CpuOpParity, MatchesNaiveReference) {
  const OpCase& c = cases()[GetParam()];
  const OpResult r = run_case(c, backend());
  std::printf("  %-45s %s\n", c.name.c_str(), r.summary().c_str());
  ASSERT_TRUE(r.shape_ok) << c.name << ": " << r.summary();
  EXPECT_LE(r.rel_l2, c.rel_tol_f32) << c.name << ": " << r.summary();
  EXPECT_TRUE(std::isfinite(r.max_abs)) << c.name;
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) {
  static const std::vector<OpCase> all = all_op_cases();
  return all[info.param].name;
}

INSTANTIATE_TEST_SUITE_P(AllCases, CpuOpParity, ::testing::Range<size_t>(0, all_op_cases().size()), case_name);

TEST(OpCaseTable, NamesAreUniqueAndEveryOpIsCovered) {
  const std::vector<OpCase> all = all_op_cases();
  std::set<std::string> names, ops;
  for (const OpCase& c : all) {
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate case " << c.name;
    ops.insert(c.op);
    EXPECT_TRUE(c.run && c.reference) << c.name;
  }
  for (const char* op : {"linear", "conv2d", "group_norm", "layer_norm", "softmax", "attention", "attention_cols",
                         "activation", "geglu", "add", "mul", "scale", "add_per_channel", "lincomb",
                         "upsample_nearest2x", "concat_channels", "embedding", "concat_rows", "pad_hw", "crop_hw"}) {
    EXPECT_TRUE(ops.count(op)) << "no case for " << op;
  }
}

}  // namespace
}  // namespace sd::testing
