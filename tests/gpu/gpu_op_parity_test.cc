// The op-parity table (tests/backend/op_cases.h) on the CUDA backend, in f16 and bf16:
// each case's inputs are rounded through the compute dtype first, then the CUDA result is
// compared with the naive reference and with the CPU backend on those same values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "backend/op_cases.h"
#include "gpu_test_util.h"

namespace sd::testing {
namespace {

const std::vector<OpCase>& cases() {
  static const std::vector<OpCase> all = all_op_cases();
  return all;
}

// Tolerance on the relative L2 error for a case in `dtype`: the table's half tolerance for
// f16 (already loose enough for output rounding), bf16 has 3 fewer mantissa bits.
double tolerance(const OpCase& c, DType dtype) {
  return dtype == DType::kBF16 ? std::max(3e-2, 4 * c.rel_tol_half) : c.rel_tol_half;
}

struct Outcome {
  Tensor got, ref, cpu;
};

Outcome run_quantized(const OpCase& c, Backend& gpu, DType dtype) {
  std::vector<Tensor> host, dev, cpu_dev;
  for (const Tensor& x : c.inputs) host.push_back(quantize(x, dtype));
  Backend& cpu = cpu_reference_backend();
  for (const Tensor& x : host) {
    const bool is_f = x.dtype() == DType::kF32;
    dev.push_back(is_f ? gpu.upload(x) : gpu.upload(x, x.dtype()));
    cpu_dev.push_back(is_f ? cpu.upload(x) : cpu.upload(x, x.dtype()));
  }
  Outcome o;
  o.got = gpu.download(c.run(gpu, dev, host));
  o.ref = c.reference(host);
  o.cpu = cpu.download(c.run(cpu, cpu_dev, host));
  return o;
}

void check_case(const OpCase& c, DType dtype) {
  Backend& gpu = gpu_backend(dtype);
  const Outcome o = run_quantized(c, gpu, dtype);
  ASSERT_TRUE(gpu.synchronize().ok());
  ASSERT_EQ(o.got.shape(), o.ref.shape()) << c.name;
  ASSERT_EQ(o.cpu.shape(), o.ref.shape()) << c.name;
  const double rel = relative_l2(o.got, o.ref), rel_cpu = relative_l2(o.got, o.cpu);
  const double max_abs = max_abs_diff(o.got, o.ref);
  std::printf("  %-4s %-45s rel_l2 %.2e (vs cpu %.2e) max_abs %.2e tol %.0e\n", dtype_name(dtype), c.name.c_str(),
              rel, rel_cpu, max_abs, tolerance(c, dtype));
  EXPECT_TRUE(std::isfinite(max_abs)) << c.name << ": non-finite output";
  EXPECT_LE(rel, tolerance(c, dtype)) << c.name << " vs naive reference";
  EXPECT_LE(rel_cpu, tolerance(c, dtype)) << c.name << " vs CPU backend";
}

class GpuOpParity : public ::testing::TestWithParam<size_t> {};

TEST_P(GpuOpParity, F16MatchesReferenceAndCpu) {
  SD_REQUIRE_GPU();
  check_case(cases()[GetParam()], DType::kF16);
}

TEST_P(GpuOpParity, Bf16MatchesReferenceAndCpu) {
  SD_REQUIRE_GPU();
  check_case(cases()[GetParam()], DType::kBF16);
}

std::string case_name(const ::testing::TestParamInfo<size_t>& info) { return cases()[info.param].name; }

INSTANTIATE_TEST_SUITE_P(AllCases, GpuOpParity, ::testing::Range<size_t>(0, cases().size()), case_name);

}  // namespace
}  // namespace sd::testing
