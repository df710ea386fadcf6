// Tests of ProfilingBackend (forwarded results, FLOP and byte counts on known shapes, scopes)
// and of the guided-step profile of the tiny UNet on the CPU: every block scope present,
// the per-scope and per-kind rows summing to the total, table and JSON well formed.
#include <gtest/gtest.h>

#include <algorithm>

#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "backend/cpu/cpu_backend.h"
#include "backend/profiling_backend.h"
#include "golden_util.h"
#include "io/checkpoint.h"
#include "pipeline/bench.h"
#include "pipeline/profile.h"

namespace sd {
namespace {

void expect_same(Backend& be, const Tensor& a, const Tensor& b) {
  const Tensor ha = be.download(a), hb = be.download(b);
  ASSERT_EQ(ha.shape(), hb.shape());
  for (int64_t i = 0; i < ha.numel(); ++i) ASSERT_EQ(ha.f32()[i], hb.f32()[i]) << i;
}

TEST(FlopFormulas, MatchTheIssueDefinitions) {
  // conv 2*B*Ho*Wo*Cout*Cin*k^2: SD's 64x64x320 -> 320 3x3 at batch 2.
  EXPECT_DOUBLE_EQ(conv2d_flops({2, 64, 64, 320}, {320, 3, 3, 320}), 2.0 * 2 * 64 * 64 * 320 * 320 * 9);
  // linear 2*M*N*K: [2, 4096, 320] -> 2560.
  EXPECT_DOUBLE_EQ(linear_flops({2, 4096, 2560}, 320), 2.0 * 8192 * 2560 * 320);
  // attention 4*B*H*Lq*Lk*D: q [2, 4096, 8*40] over 77 keys; causal halves it.
  EXPECT_DOUBLE_EQ(attention_flops({2, 4096, 320}, 77, false), 4.0 * 2 * 8 * 4096 * 77 * 40);
  EXPECT_DOUBLE_EQ(attention_flops({2, 77, 768}, 77, true), 2.0 * 2 * 12 * 77 * 77 * 64);
}

TEST(ProfilingBackend, ForwardsResultsAndRecordsKnownShapes) {
  auto cpu = cpu::make_backend(1);
  ProfilingBackend be(*cpu);
  const Tensor x = be.upload(uniform_random_host({1, 6, 6, 3}, 1));       // [B, H, W, Cin]
  const Tensor w = be.upload(uniform_random_host({4, 3, 3, 3}, 2));       // [Cout, k, k, Cin]
  const Tensor b = be.upload(uniform_random_host({4}, 3));
  const Tensor lx = be.upload(uniform_random_host({2, 5, 8}, 4));         // [B, L, K]
  const Tensor lw = be.upload(uniform_random_host({6, 8}, 5));            // [N, K]
  const Tensor q = be.upload(uniform_random_host({2, 7, 8}, 6));          // [B, Lq, H*D], H = 2, D = 4
  const Tensor kv = be.upload(uniform_random_host({2, 5, 8}, 7));         // [B, Lk, H*D]

  be.begin_recording();
  Tensor conv, conv_s2, lin, att, sum;
  {
    BackendScope s(be, "outer");
    conv = be.conv2d(x, w, b, 1, 1);  // [1, 6, 6, 4]
    {
      BackendScope inner(be, "inner");
      conv_s2 = be.conv2d(x, w, b, 2, 1);  // [1, 3, 3, 4]
    }
    lin = be.linear(lx, lw, Tensor());  // [2, 5, 6]
  }
  att = be.attention(q, kv, kv, 2, false);
  sum = be.add(conv, conv);
  auto ops = be.end_recording();
  ASSERT_TRUE(ops.ok()) << ops.status().to_string();
  ASSERT_EQ(ops->size(), 5u);
  EXPECT_TRUE(be.device_marks());  // the CPU backend's host-clock marks

  const auto& r = *ops;
  EXPECT_STREQ(r[0].kind, "conv2d");
  EXPECT_EQ(r[0].scope, "outer");
  EXPECT_DOUBLE_EQ(r[0].flops, 2.0 * 1 * 6 * 6 * 4 * 3 * 9);
  EXPECT_DOUBLE_EQ(r[0].bytes, 4.0 * (x.numel() + w.numel() + b.numel() + conv.numel()));
  EXPECT_EQ(r[1].scope, "inner");
  EXPECT_DOUBLE_EQ(r[1].flops, 2.0 * 1 * 3 * 3 * 4 * 3 * 9);
  EXPECT_EQ(r[2].scope, "outer");
  EXPECT_STREQ(r[2].kind, "linear");
  EXPECT_DOUBLE_EQ(r[2].flops, 2.0 * 10 * 6 * 8);
  EXPECT_DOUBLE_EQ(r[2].bytes, 4.0 * (lx.numel() + lw.numel() + lin.numel()));
  EXPECT_EQ(r[3].scope, "");
  EXPECT_STREQ(r[3].kind, "attention");
  EXPECT_DOUBLE_EQ(r[3].flops, 4.0 * 2 * 2 * 7 * 5 * 4);
  EXPECT_DOUBLE_EQ(r[4].flops, 0.0);
  EXPECT_DOUBLE_EQ(r[4].bytes, 3.0 * 4 * conv.numel());
  for (const OpRecord& op : r) EXPECT_GE(op.ms, 0.0);

  // Results are the inner backend's, unrecorded calls record nothing.
  expect_same(*cpu, conv, cpu->conv2d(x, w, b, 1, 1));
  expect_same(*cpu, att, cpu->attention(q, kv, kv, 2, false));
  be.begin_recording();
  auto none = be.end_recording();
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(ProfilingBackend, FusedEpiloguesForwardAndCountAsMatmuls) {
  auto cpu = cpu::make_backend(1);
  ProfilingBackend be(*cpu);
  const Tensor x = be.upload(uniform_random_host({2, 5, 5, 3}, 1));     // [B, H, W, Cin]
  const Tensor w = be.upload(uniform_random_host({4, 3, 3, 3}, 2));     // [Cout, k, k, Cin]
  const Tensor b = be.upload(uniform_random_host({4}, 3));
  const Tensor row = be.upload(uniform_random_host({2, 4}, 4));         // [B, Cout]
  const Tensor res = be.upload(uniform_random_host({2, 5, 5, 4}, 5));   // [B, Ho, Wo, Cout]
  const Tensor lx = be.upload(uniform_random_host({3, 8}, 6));          // [M, K]
  const Tensor lw = be.upload(uniform_random_host({6, 8}, 7));          // [N, K]
  const Tensor lres = be.upload(uniform_random_host({3, 6}, 8));        // [M, N]
  be.begin_recording();
  const Tensor conv = be.conv2d_fused(x, w, b, 1, 1, row, res);
  const Tensor lin = be.linear_residual(lx, lw, Tensor(), lres);
  auto ops = be.end_recording();
  ASSERT_TRUE(ops.ok());
  ASSERT_EQ(ops->size(), 2u);  // one record each: the portable default's inner ops are not seen
  EXPECT_STREQ((*ops)[0].kind, "conv2d");
  EXPECT_DOUBLE_EQ((*ops)[0].flops, 2.0 * 2 * 5 * 5 * 4 * 3 * 9);
  EXPECT_DOUBLE_EQ((*ops)[0].bytes, 4.0 * (x.numel() + w.numel() + b.numel() + row.numel() + 2 * res.numel()));
  EXPECT_STREQ((*ops)[1].kind, "linear");
  EXPECT_DOUBLE_EQ((*ops)[1].flops, 2.0 * 3 * 6 * 8);
  expect_same(*cpu, conv, cpu->conv2d_fused(x, w, b, 1, 1, row, res));
  expect_same(*cpu, lin, cpu->linear_residual(lx, lw, Tensor(), lres));
}

// The scopes UNet::forward names for a configuration, plus the step's own.
std::vector<std::string> expected_scopes(const UNetConfig& c) {
  // context_kv: every cross-attention's K/V projection in one GEMM.
  std::vector<std::string> s = {"scale_in", "time_embed", "context_kv", "conv_in"};
  const size_t levels = c.block_out_channels.size();
  // widen: the guided step runs the layers before the first attention on half the rows.
  bool widened = false;
  const auto widen = [&] {
    if (!widened) s.push_back("widen");
    widened = true;
  };
  for (size_t i = 0; i < levels; ++i) {
    for (int j = 0; j < c.layers_per_block; ++j) {
      s.push_back("down." + std::to_string(i) + ".res." + std::to_string(j));
      if (c.down_block_types[i].find("CrossAttn") != std::string::npos) {
        widen();
        s.push_back("down." + std::to_string(i) + ".attn." + std::to_string(j));
      }
    }
    if (i + 1 < levels) s.push_back("down." + std::to_string(i) + ".downsample");
  }
  s.push_back("mid.res.0");
  widen();
  for (const char* m : {"mid.attn.0", "mid.res.1"}) s.push_back(m);
  for (size_t i = 0; i < levels; ++i) {
    for (int j = 0; j <= c.layers_per_block; ++j) {
      s.push_back("up." + std::to_string(i) + ".res." + std::to_string(j));
      if (c.up_block_types[i].find("CrossAttn") != std::string::npos)
        s.push_back("up." + std::to_string(i) + ".attn." + std::to_string(j));
    }
    if (i + 1 < levels) s.push_back("up." + std::to_string(i) + ".upsample");
  }
  for (const char* e : {"out", "guidance", "sampler"}) s.push_back(e);
  return s;
}

void expect_sums(const std::vector<ProfileRow>& rows, const ProfileRow& total) {
  ProfileRow sum;
  for (const ProfileRow& r : rows) {
    sum.ops += r.ops;
    sum.ms += r.ms;
    sum.flops += r.flops;
    sum.bytes += r.bytes;
    sum.floor_ms += r.floor_ms;
  }
  EXPECT_EQ(sum.ops, total.ops);
  EXPECT_NEAR(sum.ms, total.ms, 1e-9 * (1 + total.ms));
  EXPECT_NEAR(sum.flops, total.flops, 1e-9 * total.flops);
  EXPECT_NEAR(sum.bytes, total.bytes, 1e-9 * total.bytes);
  EXPECT_NEAR(sum.floor_ms, total.floor_ms, 1e-9 * (1 + total.floor_ms));
}

TEST(GuidedStepProfile, TinyUNetHasEveryScopeAndConsistentTotals) {
  const std::string model = testing::data_path("tiny-sd1/model");
  ProfileOptions o;
  o.model = model;
  o.batch_sizes = {1, 2};
  o.width = o.height = 64;  // latents 8x8: divisible by the 3 downsamplings
  o.warmup = 1;
  o.repeats = 3;
  auto rep = run_profile(o);
  ASSERT_TRUE(rep.ok()) << rep.status().to_string();
  ASSERT_EQ(rep->steps.size(), 2u);
  auto ck = load_checkpoint(model);
  ASSERT_TRUE(ck.ok());
  const UNetConfig& c = ck->unet;
  const std::vector<std::string> want = expected_scopes(c);
  for (const StepProfile& p : rep->steps) {
    std::vector<std::string> got;
    for (const ProfileRow& r : p.scopes) got.push_back(r.name);
    EXPECT_EQ(got, want) << "batch " << p.batch;
    expect_sums(p.scopes, p.total);
    expect_sums(p.kinds, p.total);
    EXPECT_GT(p.total.ms, 0);
    EXPECT_GT(p.step_ms, 0);
    for (size_t i = 1; i < p.kinds.size(); ++i) EXPECT_GE(p.kinds[i - 1].ms, p.kinds[i].ms);
    // The per-op list is the same ops: one entry each, in issue order, summing to the total.
    ASSERT_EQ(static_cast<int>(p.ops.size()), p.total.ops);
    double op_ms = 0, op_flops = 0;
    for (const ProfileOp& op : p.ops) op_ms += op.ms, op_flops += op.flops;
    EXPECT_NEAR(op_ms, p.total.ms, 1e-9 * (1 + p.total.ms));
    EXPECT_DOUBLE_EQ(op_flops, p.total.flops);
    EXPECT_EQ(p.ops.front().scope, "scale_in");
    EXPECT_EQ(p.ops.back().scope, "sampler");
    const auto conv_in_op =
        std::find_if(p.ops.begin(), p.ops.end(), [](const ProfileOp& op) { return op.scope == "conv_in"; });
    ASSERT_NE(conv_in_op, p.ops.end());
    EXPECT_EQ(conv_in_op->kind, "conv2d");
    EXPECT_EQ(conv_in_op->output.find("f32[" + std::to_string(p.batch) + ",8,8,"), 0u) << conv_in_op->output;
    // conv_in is one 3x3 conv on batch rows of 8x8 latents.
    const ProfileRow& conv_in = p.scopes[3];
    // context_kv: one GEMM of the 77-token contexts of 2*batch rows.
    EXPECT_EQ(p.scopes[2].ops, 1);
    ASSERT_EQ(conv_in.name, "conv_in");
    EXPECT_EQ(conv_in.ops, 1);
    // (batch rows only: uncond and cond rows share the layers before the first attention)
    EXPECT_DOUBLE_EQ(conv_in.flops, 2.0 * p.batch * 8 * 8 * c.block_out_channels[0] * c.in_channels * 9);
    // Every conv, linear and attention op of the UNet has FLOPs, as do the decoder's skip reads
    // (group norm + 1x1 shortcut GEMM of [h | skip]); the step's other kinds none.
    std::set<std::string> with_flops;
    for (const ProfileRow& k : p.kinds)
      if (k.flops > 0) with_flops.insert(k.name);
    EXPECT_EQ(with_flops, (std::set<std::string>{"conv2d", "linear", "attention", "concat_norm_shortcut"}));
  }
  // The second batch does about twice the matmul work of the first.
  EXPECT_NEAR(rep->steps[1].total.flops / rep->steps[0].total.flops, 2.0, 0.05);

  const std::string table = rep->table();
  for (const char* needle : {"per scope", "per op kind", "down.0.attn.1", "conv2d", "sum of op times"})
    EXPECT_NE(table.find(needle), std::string::npos) << needle;
  EXPECT_EQ(table.find("floor ms"), std::string::npos);  // floors are for GPUs only
  EXPECT_EQ(table.find("per op (issue order)"), std::string::npos);  // only when asked for
  const auto j = nlohmann::json::parse(rep->json());
  ASSERT_EQ(j["steps"].size(), 2u);
  EXPECT_EQ(j["timer"], "host clock");
  EXPECT_EQ(j["steps"][0]["scopes"].size(), want.size());
  EXPECT_EQ(j["steps"][1]["batch"], 2);
  EXPECT_EQ(j["steps"][0]["total"]["ops"].get<int>(), rep->steps[0].total.ops);
  EXPECT_EQ(j["steps"][0]["ops"].size(), rep->steps[0].ops.size());
  EXPECT_EQ(j["steps"][0]["ops"][0]["scope"], "scale_in");
  EXPECT_DOUBLE_EQ(j["peak_matmul_flops"].get<double>(), kPeakMatmulFlops);
}

TEST(GuidedStepProfile, BenchProfileOnlyWritesItIntoTheJson) {
  BenchOptions o;
  o.model = testing::data_path("tiny-sd1/model");
  o.width = o.height = 64;
  o.steps_and_images = false;
  o.profile = true;
  o.profile_ops = true;
  o.profile_repeats = 1;
  auto rep = run_bench(o);
  ASSERT_TRUE(rep.ok()) << rep.status().to_string();
  ASSERT_TRUE(rep->profile.has_value());
  const auto j = nlohmann::json::parse(rep->json());
  EXPECT_EQ(j["profile"]["steps"].size(), 1u);
  const std::string table = rep->table();
  EXPECT_NE(table.find("per scope"), std::string::npos);
  // --profile-ops: one line per op after the header, conv_in's among them.
  const size_t at = table.find("per op (issue order)");
  ASSERT_NE(at, std::string::npos);
  EXPECT_NE(table.find("conv_in", at), std::string::npos);
  EXPECT_EQ(std::count(table.begin() + at, table.end(), '\n'), rep->profile->steps[0].total.ops + 4);  // + 2 headers, blank, sum
}

TEST(Bench, EndToEndReportsTheMedianOfItsRuns) {
  BenchOptions o;
  o.model = testing::data_path("tiny-sd1/model");
  o.width = o.height = 64;
  o.steps = 2;
  o.timed_steps = 1;
  o.e2e_runs = 3;
  auto rep = run_bench(o);
  ASSERT_TRUE(rep.ok()) << rep.status().to_string();
  ASSERT_EQ(rep->rows.size(), 1u);
  const BenchRow& r = rep->rows[0];
  EXPECT_GT(r.step_ms_median, 0.0);
  EXPECT_GT(r.batch_seconds, 0.0);
  EXPECT_DOUBLE_EQ(r.seconds_per_image, r.batch_seconds);
  EXPECT_NEAR(r.images_per_second * r.batch_seconds, 1.0, 1e-9);
  EXPECT_GT(r.text_ms, 0.0);
  EXPECT_GT(r.decode_ms_per_image, 0.0);
  EXPECT_GT(r.png_ms_per_image, 0.0);
}

// The CPU backend reads no telemetry (no row carries any); a row that does (a GPU's, as NVML
// gives it) is printed under the table and written into the JSON.
TEST(Bench, ReportsDeviceTelemetryWhereARowHasIt) {
  BenchOptions o;
  o.model = testing::data_path("tiny-sd1/model");
  o.width = o.height = 64;
  o.steps = 2;
  o.timed_steps = 2;
  o.end_to_end = false;
  auto rep = run_bench(o);
  ASSERT_TRUE(rep.ok()) << rep.status().to_string();
  ASSERT_EQ(rep->rows.size(), 1u);
  EXPECT_FALSE(rep->rows[0].telemetry.has_value());
  EXPECT_EQ(rep->table().find("SM clock"), std::string::npos);
  EXPECT_FALSE(nlohmann::json::parse(rep->json())["rows"][0].contains("telemetry"));

  DeviceTelemetry t;
  t.samples = 120;
  t.sm_mhz_mean = 1671.4, t.sm_mhz_min = 1425, t.sm_mhz_max = 1980;
  t.power_w_mean = 619.6, t.power_w_max = 699, t.power_limit_w = 700;
  t.power_capped = 0.88, t.slowed = 0.0, t.temperature_c_max = 61;
  rep->rows[0].telemetry = t;
  std::string table = rep->table();
  EXPECT_NE(table.find("batch 1, timed steps: SM clock 1671 MHz mean (1425-1980), power 620 W mean (max 699, "
                       "limit 700), power-capped 88% / slowed 0% of 120 samples, 61 C max\n"),
            std::string::npos)
      << table;
  EXPECT_EQ(table.find("energy"), std::string::npos);  // no energy counter: nothing said
  EXPECT_FALSE(nlohmann::json::parse(rep->json())["rows"][0]["telemetry"].contains("energy_j"));
  EXPECT_FALSE(nlohmann::json::parse(rep->json())["rows"][0].contains("energy_j_per_step"));

  // A counter read over too short an interval: the table says so instead of a number.
  rep->rows[0].telemetry->energy_j = 30.0, rep->rows[0].telemetry->seconds = 0.1;
  table = rep->table();
  EXPECT_FALSE(nlohmann::json::parse(rep->json())["rows"][0].contains("energy_j_per_step"));
  EXPECT_NE(table.find("61 C max; energy not shown (0.10 s of steps; more --timed-steps for >= 0.5 s)\n"),
            std::string::npos)
      << table;
  // With the board's energy counter: joules per step, and per image over the run's 2 steps.
  rep->rows[0].telemetry->energy_j = 144.9, rep->rows[0].telemetry->seconds = 0.21;
  rep->rows[0].energy_j_per_step = 72.5, rep->rows[0].denoise_energy_j_per_image = 145.0;
  table = rep->table();
  EXPECT_NE(table.find("61 C max; energy 72.50 J a step (690 W mean by the counter), denoising 145.0 J an image\n"),
            std::string::npos)
      << table;
  rep->rows[0].energy_j_per_image = 151.25;  // and end to end
  table = rep->table();
  EXPECT_NE(table.find("denoising 145.0 J an image; end to end 151.2 J an image\n"), std::string::npos) << table;
  const auto j = nlohmann::json::parse(rep->json())["rows"][0]["telemetry"];
  EXPECT_EQ(j["samples"], 120);
  EXPECT_DOUBLE_EQ(j["sm_mhz_mean"].get<double>(), 1671.4);
  EXPECT_DOUBLE_EQ(j["power_capped_fraction"].get<double>(), 0.88);
  EXPECT_DOUBLE_EQ(j["power_limit_w"].get<double>(), 700.0);
  EXPECT_DOUBLE_EQ(j["energy_j"].get<double>(), 144.9);
  EXPECT_DOUBLE_EQ(j["seconds"].get<double>(), 0.21);
  const auto row = nlohmann::json::parse(rep->json())["rows"][0];
  EXPECT_DOUBLE_EQ(row["energy_j_per_step"].get<double>(), 72.5);
  EXPECT_DOUBLE_EQ(row["denoise_energy_j_per_image"].get<double>(), 145.0);
  EXPECT_DOUBLE_EQ(row["energy_j_per_image"].get<double>(), 151.25);
}

TEST(GuidedStepProfile, RejectsSizesNotMultipleOf8) {
  ProfileOptions o;
  o.model = testing::data_path("tiny-sd1/model");
  o.width = 60;
  auto rep = run_profile(o);
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.status().to_string().find("multiples of 8"), std::string::npos);
}

}  // namespace
}  // namespace sd
