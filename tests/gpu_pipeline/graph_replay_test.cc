// Captured denoising steps (StepGraphs, Backend::capture): a CUDA graph's replays equal the
// same ops run eagerly while its inputs change and other work reuses memory; graph steps (UNet,
// guidance and sampler update in one graph) equal eager steps for every sampler family; a crowd
// of requests with different samplers at different steps through graphs equals each run alone.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "backend/backend.h"
#include "golden_util.h"
#include "pipeline_util.h"
#include "pipeline/model_factory.h"
#include "pipeline/sd_engine.h"
#include "scoped_env.h"

namespace sd {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device present: GPU test skipped"

Tensor random_host(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> n;
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = n(gen);
  return Tensor::from_vector(shape, v);
}

GenerationRequest request(const std::string& sampler, int steps, float cfg, int64_t seed, int size, int batch = 1) {
  return testing::fox_request(sampler, steps, cfg, seed, size, batch);
}

std::unique_ptr<SdEngine> load(const std::string& path, const Device& d) {
  auto e = SdEngine::load(path, d);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

Tensor run_alone(SdEngine& engine, const GenerationRequest& r) {
  auto res = engine.generate(r);
  EXPECT_TRUE(res.ok()) << res.status().to_string();
  return res.ok() ? res->final_latents : Tensor();
}

// Runs `reqs` as one continuously batched crowd (one more job joins each step); final latents.
std::vector<Tensor> run_crowd(SdEngine& engine, const std::vector<GenerationRequest>& reqs) {
  std::vector<std::unique_ptr<Job>> jobs;
  for (const auto& r : reqs) jobs.push_back(std::move(engine.begin(r)).value());
  std::vector<Tensor> out(reqs.size());
  std::vector<Job*> active;
  size_t next = 0;
  while (next < jobs.size() || !active.empty()) {
    if (next < jobs.size()) active.push_back(jobs[next++].get());
    const Status s = engine.step(active);
    EXPECT_TRUE(s.ok()) << s.to_string();
    if (!s.ok()) return {};
    std::vector<Job*> still;
    for (Job* j : active) {
      if (!j->finished()) {
        still.push_back(j);
        continue;
      }
      auto res = engine.finish({j});
      EXPECT_TRUE(res.ok());
      for (size_t k = 0; k < jobs.size(); ++k)
        if (jobs[k].get() == j && res.ok()) out[k] = (*res)[0].final_latents;
    }
    active = still;
  }
  return out;
}

// Every sampler family (history slots, second-order and warm-up evaluations, ancestral noise),
// guidance on and off, a 2-image job: up to 10 images at once, buckets 1 to 16. Joining one per
// step, the jobs are at different evaluations whenever they share a replay.
std::vector<GenerationRequest> crowd_requests(int size) {
  return {request("euler", 6, 7.5f, 1, size),   request("DPM++ 2M Karras", 4, 5.0f, 2, size),
          request("ddim", 5, 1.0f, 3, size, 2), request("Euler a", 5, 3.0f, 4, size),
          request("heun", 3, 6.0f, 5, size),    request("dpmpp_2m", 4, 7.0f, 6, size),
          request("lms", 6, 4.0f, 7, size),     request("unipc", 5, 6.5f, 8, size),
          request("plms", 5, 5.5f, 9, size)};
}

TEST(StepGraphs, BucketsUpTo128) {
  EXPECT_EQ(StepGraphs::bucket_for(1), 1);
  EXPECT_EQ(StepGraphs::bucket_for(2), 2);
  EXPECT_EQ(StepGraphs::bucket_for(3), 4);
  EXPECT_EQ(StepGraphs::bucket_for(7), 8);
  EXPECT_EQ(StepGraphs::bucket_for(9), 12);
  EXPECT_EQ(StepGraphs::bucket_for(12), 12);
  EXPECT_EQ(StepGraphs::bucket_for(13), 16);
  EXPECT_EQ(StepGraphs::bucket_for(16), 16);
  EXPECT_EQ(StepGraphs::bucket_for(17), 24);
  EXPECT_EQ(StepGraphs::bucket_for(24), 24);
  EXPECT_EQ(StepGraphs::bucket_for(25), 32);
  EXPECT_EQ(StepGraphs::bucket_for(32), 32);
  EXPECT_EQ(StepGraphs::bucket_for(33), 48);
  EXPECT_EQ(StepGraphs::bucket_for(48), 48);
  EXPECT_EQ(StepGraphs::bucket_for(49), 64);
  EXPECT_EQ(StepGraphs::bucket_for(64), 64);
  EXPECT_EQ(StepGraphs::bucket_for(65), 96);
  EXPECT_EQ(StepGraphs::bucket_for(96), 96);
  EXPECT_EQ(StepGraphs::bucket_for(97), 128);
  EXPECT_EQ(StepGraphs::bucket_for(128), 128);
  EXPECT_EQ(StepGraphs::bucket_for(129), 0);
}

// The bucketing, padding, static-buffer refill and guidance-in-graph logic through the
// portable capture (which re-runs the function): on the CPU this must equal the eager step.
// The time table and projected contexts are off here (=0), so the plain graph inputs stay tested.
TEST(StepGraphs, PortableCaptureOnCpuEqualsEagerSteps) {
  testing::ScopedEnv table("SDSERVE_STEP_TIME_TABLE", "0");
  testing::ScopedEnv kv("SDSERVE_STEP_CONTEXT_KV", "0");
  auto eager = load(testing::data_path("tiny-sd1/model"), Device::cpu());
  auto graphs = load(testing::data_path("tiny-sd1/model"), Device::cpu());
  ASSERT_TRUE(eager && graphs);
  EXPECT_FALSE(graphs->step_graphs) << "graphs must stay off by default on the CPU";
  graphs->step_graphs = true;
  const auto reqs = crowd_requests(64);
  const std::vector<Tensor> a = run_crowd(*graphs, reqs);
  EXPECT_GT(graphs->captured_graphs(), 1u);  // the crowd grows and shrinks through several buckets
  ASSERT_EQ(a.size(), reqs.size());
  for (size_t k = 0; k < reqs.size(); ++k) {
    const Tensor b = run_alone(*eager, reqs[k]);
    ASSERT_TRUE(a[k].defined() && b.defined()) << k;
    // The crowd's UNet batches differ from the request's own (CPU GEMM blocking rounds
    // differently by batch size); UniPC's corrector amplifies that most (eager crowd ~8e-6).
    EXPECT_LE(relative_l2(a[k], b), 5e-5) << reqs[k].sampler;
  }
}

// Each request on its own through the graph path (gather, UNet, guidance + sampler update in
// the captured function) equals the eager step on the CPU up to f32 rounding: the graph runs
// the UNet's layers before the first attention on half the rows (uncond and cond rows are
// equal there), and without guidance it also runs the uncond rows; CPU GEMMs of other row
// counts block differently (~1e-6 here); the time table (on by default) projects a job's
// whole schedule in one GEMM of ~50 rows rather than 2 rows per step (~1.5e-5 for euler).
TEST(StepGraphs, PortableCaptureOnCpuAloneEqualsEagerSteps) {
  auto engine = load(testing::data_path("tiny-sd1/model"), Device::cpu());
  ASSERT_TRUE(engine);
  for (const GenerationRequest& r : crowd_requests(64)) {
    engine->step_graphs = true;
    const Tensor a = run_alone(*engine, r);
    engine->step_graphs = false;
    const Tensor b = run_alone(*engine, r);
    ASSERT_TRUE(a.defined() && b.defined()) << r.sampler;
    EXPECT_LE(relative_l2(a, b), 5e-5) << r.sampler;
  }
}

// Out of device memory while recording a step graph: the other graphs are dropped (their memory
// given back) and the recording is tried once more, so graph steps go on; when that fails too,
// the engine's own retry (every graph and the cache given back) records it a third time; a
// third failure fails that request only. Graphs stay on; results equal eager steps.
TEST(StepGraphs, OutOfMemoryWhileRecordingDropsTheOtherGraphs) {
  auto engine = load(testing::data_path("tiny-sd1/model"), Device::cpu());
  ASSERT_TRUE(engine);
  engine->step_graphs = true;
  const GenerationRequest one = request("euler", 3, 7.5f, 11, 64), two = request("euler", 3, 7.5f, 12, 64, 2),
                          four = request("DPM++ 2M Karras", 3, 5.0f, 13, 64, 4);
  ASSERT_TRUE(run_alone(*engine, one).defined());
  ASSERT_TRUE(run_alone(*engine, two).defined());
  ASSERT_EQ(engine->captured_graphs(), 2u);  // buckets 1 and 2
  engine->fail_graph_records_for_test(1);
  const Tensor a = run_alone(*engine, four);
  EXPECT_TRUE(engine->step_graphs);
  EXPECT_EQ(engine->captured_graphs(), 1u);  // bucket 4 alone
  engine->fail_graph_records_for_test(2);    // the graphs' retry fails as well: the engine's succeeds
  const Tensor b = run_alone(*engine, two);
  EXPECT_TRUE(engine->step_graphs);
  EXPECT_EQ(engine->captured_graphs(), 1u);
  engine->fail_graph_records_for_test(3);  // all three fail: that request fails, nothing else
  auto failed = engine->generate(one);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(engine->step_graphs);
  EXPECT_TRUE(run_alone(*engine, one).defined());
  engine->step_graphs = false;
  const Tensor want_four = run_alone(*engine, four), want_two = run_alone(*engine, two);
  ASSERT_TRUE(a.defined() && b.defined() && want_four.defined() && want_two.defined());
  EXPECT_LE(relative_l2(a, want_four), 5e-5);
  EXPECT_LE(relative_l2(b, want_two), 5e-5);
}

// Out of device memory in the text encoder, a step or the VAE decode: the engine gives back its
// recorded graphs and memory cache and runs that stage once more (same result, graphs stay on);
// failing twice fails only that request, and the next one is served.
TEST(StepGraphs, OutOfMemoryInAStageIsRetriedOnceAfterGivingMemoryBack) {
  auto engine = load(testing::data_path("tiny-sd1/model"), Device::cpu());
  ASSERT_TRUE(engine);
  engine->step_graphs = true;
  // Stage 0: the text encoder (in begin), 1..3: the steps, 4: the decode.
  const auto run_failing_once_at = [&](const GenerationRequest& req, int stage) -> Tensor {
    if (stage == 0) engine->fail_memory_for_test(1);
    auto job = engine->begin(req);
    EXPECT_TRUE(job.ok()) << job.status().to_string();
    if (!job.ok()) return Tensor();
    std::vector<Job*> jobs{job->get()};
    for (int k = 1; !jobs[0]->finished(); ++k) {
      if (k == stage) engine->fail_memory_for_test(1);
      const Status s = engine->step(jobs);
      EXPECT_TRUE(s.ok()) << s.to_string();
      if (!s.ok()) return Tensor();
    }
    if (stage == 4) engine->fail_memory_for_test(1);
    auto res = engine->finish(jobs);
    EXPECT_TRUE(res.ok()) << res.status().to_string();
    return res.ok() ? (*res)[0].final_latents : Tensor();
  };
  GenerationRequest r = request("euler", 3, 7.5f, 21, 64);
  for (int stage = 0; stage < 5; ++stage) {
    r.prompt = "a fox, retried at stage " + std::to_string(stage);  // a new prompt: the encoder runs
    const Tensor got = run_failing_once_at(r, stage);
    const Tensor want = run_alone(*engine, r);
    ASSERT_TRUE(got.defined() && want.defined()) << stage;
    EXPECT_EQ(relative_l2(got, want), 0.0) << "stage " << stage;
    EXPECT_TRUE(engine->step_graphs);
    EXPECT_EQ(engine->captured_graphs(), 1u);
  }
  EXPECT_EQ(engine->events().memory_retries, 5u);
  EXPECT_GE(engine->events().graph_recordings, 1u);
  engine->fail_memory_for_test(2);  // the retry fails too: this request fails, the next one runs
  auto failed = engine->generate(request("euler", 3, 7.5f, 22, 64));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(failed.status().message().find("out of GPU memory"), std::string::npos);
  EXPECT_TRUE(run_alone(*engine, request("euler", 3, 7.5f, 22, 64)).defined());
}

// One image size more than max_plan_sizes: the engine gives back every graph and per-shape plan
// (Backend::release_shape_plans) before planning it; the sizes met before are planned again
// when next met, with the same results.
TEST(StepGraphs, OneSizeMoreThanPlannedReleasesPlansAndResultsStay) {
  auto engine = load(testing::data_path("tiny-sd1/model"), Device::cpu());
  ASSERT_TRUE(engine);
  engine->step_graphs = true;
  engine->max_plan_sizes = 2;
  const auto sized = [](int w, int h, int64_t seed) {
    GenerationRequest r = request("euler", 3, 7.5f, seed, 64);
    r.width = w;
    r.height = h;
    return r;
  };
  const Tensor a = run_alone(*engine, sized(64, 64, 31));
  ASSERT_TRUE(run_alone(*engine, sized(72, 64, 32)).defined());
  EXPECT_EQ(engine->events().plan_releases, 0u);
  EXPECT_EQ(engine->planned_sizes(), 2u);
  EXPECT_EQ(engine->captured_graphs(), 2u);
  ASSERT_TRUE(run_alone(*engine, sized(64, 80, 33)).defined());  // a third size: release first
  EXPECT_EQ(engine->events().plan_releases, 1u);
  EXPECT_EQ(engine->planned_sizes(), 1u);
  EXPECT_EQ(engine->captured_graphs(), 1u);
  const Tensor again = run_alone(*engine, sized(64, 64, 31));  // planned again: 2 sizes, no release
  EXPECT_EQ(engine->events().plan_releases, 1u);
  ASSERT_TRUE(a.defined() && again.defined());
  EXPECT_EQ(relative_l2(a, again), 0.0);
  EXPECT_TRUE(engine->step_graphs);
  engine->max_plan_sizes = 0;  // no bound
  for (int w : {88, 96, 104}) ASSERT_TRUE(run_alone(*engine, sized(w, 64, 34)).defined());
  EXPECT_EQ(engine->events().plan_releases, 1u);
  EXPECT_EQ(engine->planned_sizes(), 5u);
}

// The time table (SDSERVE_STEP_TIME_TABLE, on by default): graphs gather the ResNets' time projections,
// made once per timestep value, instead of computing the time embedding each step. The crowd
// equals each request alone and eagerly; a second crowd with the same schedules projects nothing new.
// With SDSERVE_STEP_CONTEXT_KV (on by default) too: buckets up to 4 images take projected context rows, larger
// ones the plain contexts (the crowd passes through both).
TEST(StepGraphs, TimeTableOnCpuEqualsEagerSteps) {
  testing::ScopedEnv table("SDSERVE_STEP_TIME_TABLE", "1");
  testing::ScopedEnv kv("SDSERVE_STEP_CONTEXT_KV", "1");
  auto eager = load(testing::data_path("tiny-sd1/model"), Device::cpu());
  auto graphs = load(testing::data_path("tiny-sd1/model"), Device::cpu());
  ASSERT_TRUE(eager && graphs);
  graphs->step_graphs = true;
  const auto reqs = crowd_requests(64);
  const std::vector<Tensor> a = run_crowd(*graphs, reqs);
  ASSERT_EQ(a.size(), reqs.size());
  for (size_t k = 0; k < reqs.size(); ++k) {
    const Tensor b = run_alone(*eager, reqs[k]);
    ASSERT_TRUE(a[k].defined() && b.defined()) << k;
    EXPECT_LE(relative_l2(a[k], b), 5e-5) << reqs[k].sampler;  // as PortableCaptureOnCpuEqualsEagerSteps
  }
  const int64_t made = graphs->time_table_computed();
  EXPECT_GT(made, 9) << "the table was not used";
  const std::vector<Tensor> again = run_crowd(*graphs, reqs);
  EXPECT_EQ(graphs->time_table_computed(), made) << "the same schedules were projected twice";
  ASSERT_EQ(again.size(), a.size());
  for (size_t k = 0; k < a.size(); ++k) EXPECT_LE(relative_l2(again[k], a[k]), 1e-6) << reqs[k].sampler;
}

// Two graphs of different shapes (sharing the backend's graph memory) replayed in turn with
// new inputs, other work in between: each result equals the eager ops on the same inputs.
TEST(CudaGraphs, ReplaysEqualEagerOpsWhileInputsChangeAndMemoryIsReused) {
  SKIP_WITHOUT_GPU();
  auto made = make_backend(Device::cuda(0));
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  Backend& be = **made;
  ASSERT_TRUE(be.supports_capture());
  const Tensor w = be.upload(random_host({64, 3, 3, 32}, 1));  // conv [Cout, k, k, Cin]
  const Tensor bias = be.upload(random_host({64}, 2));
  const Tensor lw = be.upload(random_host({32, 64}, 3));       // linear [N, K]
  auto ops = [&](const Tensor& in, const Tensor& c) {
    const Tensor h = be.activation(be.conv2d(in, w, bias, 1, 1), Activation::kSiLU);  // [B, H, W, 64]
    const Tensor y = be.linear(h, lw, Tensor());                                      // [B, H, W, 32]
    return be.lincomb({y, in}, c);
  };
  const Shape shapes[2] = {{4, 16, 16, 32}, {2, 8, 8, 32}};
  Tensor x[2], coeffs[2], out[2];  // static inputs [B, H, W, 32] and device coefficients [B, 2]
  std::unique_ptr<CapturedGraph> graph[2];
  const size_t before = be.memory_in_use();
  for (int g = 0; g < 2; ++g) {
    x[g] = be.upload(random_host(shapes[g], 4 + g));
    coeffs[g] = be.upload(random_host({shapes[g][0], 2}, 6 + g), DType::kF32);
    graph[g] = be.capture([&, g] { out[g] = ops(x[g], coeffs[g]); });
    ASSERT_TRUE(graph[g]);
  }
  for (uint32_t round = 0; round < 3; ++round) {
    Tensor xh[2], ch[2];
    for (int g = 0; g < 2; ++g) {
      xh[g] = random_host(shapes[g], 10 + 2 * round + g);
      ch[g] = random_host({shapes[g][0], 2}, 20 + 2 * round + g);
      be.copy(be.upload(xh[g]), x[g]);
      be.copy(be.upload(ch[g], DType::kF32), coeffs[g]);
      graph[g]->replay();
      // Other work in between: it must not be handed the graphs' memory.
      Tensor scratch = be.upload(random_host({4, 16, 16, 64}, 30 + round));
      scratch = be.scale(scratch, 3.0f);
    }
    for (int g = 0; g < 2; ++g) {  // graph 0's result is read after graph 1 ran
      const Tensor got = be.download(out[g]);
      const Tensor want = be.download(ops(be.upload(xh[g]), be.upload(ch[g], DType::kF32)));
      const double e = relative_l2(got, want);
      EXPECT_LE(e, 1e-6) << "graph " << g << " replay " << round;
      std::printf("[gpu] graph %d replay %u vs eager relative L2 %.2e\n", g, round, e);
    }
  }
  const size_t with_graphs = be.memory_in_use();
  EXPECT_GT(with_graphs, before);  // the graphs' pool counts as in use while they live
  for (int g = 0; g < 2; ++g) {
    out[g] = Tensor();
    graph[g].reset();
  }
  ASSERT_TRUE(be.synchronize().ok());
  EXPECT_LT(be.memory_in_use(), with_graphs);
}

TEST(CudaGraphs, GraphStepsEqualEagerSteps) {
  SKIP_WITHOUT_GPU();
  // One engine, graphs toggled: two engines would autotune cuDNN separately and may pick
  // different plans, whose fp16 rounding differs by more than the graphs do.
  auto engine = load(testing::data_path("tiny-sd1/model"), Device::cuda(0));
  ASSERT_TRUE(engine);
  ASSERT_TRUE(engine->step_graphs) << "graphs on by default on CUDA (unset SDSERVE_CUDA_GRAPHS=0 for this test)";
  // The graph runs the layers before the first attention on half the rows (uncond and cond
  // rows are equal there) and, without guidance, also the uncond rows (weight 0): batches of
  // other sizes, whose fp16 kernels (and autotuned plans) round differently.
  for (const auto& r : {request("euler", 5, 7.5f, 11, 128), request("dpmpp_2m", 4, 1.0f, 12, 128, 2),
                        request("Euler a", 4, 5.0f, 13, 128), request("unipc", 4, 6.0f, 14, 128),
                        request("plms", 4, 7.0f, 15, 128), request("heun", 3, 4.0f, 16, 128),
                        request("lms", 5, 3.0f, 17, 128)}) {
    engine->step_graphs = true;
    const Tensor a = run_alone(*engine, r);
    EXPECT_TRUE(engine->step_graphs) << "a capture failed and the engine fell back to eager steps";
    engine->step_graphs = false;
    const Tensor b = run_alone(*engine, r);
    ASSERT_TRUE(a.defined() && b.defined());
    const double e = relative_l2(a, b);
    std::printf("[gpu] %s: graph steps vs eager steps, final latents relative L2 %.2e\n", r.sampler.c_str(), e);
    EXPECT_LE(e, 1e-2) << r.sampler;
  }
  EXPECT_EQ(engine->captured_graphs(), 2u);
}

// On CUDA the release destroys cuDNN / cuBLASLt plans and attention choices and makes the cuDNN
// handle again: a size met before is planned, timed and recorded again and its result stays
// (within fp16 rounding: the timing may pick other kernels), and a crowd still runs by graphs.
TEST(CudaGraphs, ReleasingShapePlansForOneMoreSizeKeepsResults) {
  SKIP_WITHOUT_GPU();
  auto engine = load(testing::data_path("tiny-sd1/model"), Device::cuda(0));
  ASSERT_TRUE(engine);
  ASSERT_TRUE(engine->step_graphs);
  engine->max_plan_sizes = 1;
  GenerationRequest a = request("euler", 4, 7.5f, 41, 128), b = request("dpmpp_2m", 4, 5.0f, 42, 128);
  b.width = 144;
  const Tensor a1 = run_alone(*engine, a);
  const Tensor b1 = run_alone(*engine, b);  // one size more: release, then plan 144x128
  const Tensor a2 = run_alone(*engine, a);  // and again
  ASSERT_TRUE(a1.defined() && b1.defined() && a2.defined());
  EXPECT_EQ(engine->events().plan_releases, 2u);
  EXPECT_TRUE(engine->step_graphs) << "a capture failed after the release";
  const double e = relative_l2(a1, a2);
  std::printf("[gpu] 128x128 before and after releasing every plan: final latents relative L2 %.2e\n", e);
  EXPECT_LE(e, 1e-2);
  const std::vector<Tensor> crowd = run_crowd(*engine, crowd_requests(128));
  ASSERT_FALSE(crowd.empty());
  for (const Tensor& t : crowd) EXPECT_TRUE(t.defined());
  EXPECT_EQ(engine->events().plan_releases, 2u);
}

TEST(CudaGraphs, CrowdAtDifferentStepsThroughGraphsEqualsEachAlone) {
  SKIP_WITHOUT_GPU();
  auto engine = load(testing::data_path("tiny-sd1/model"), Device::cuda(0));
  ASSERT_TRUE(engine);
  engine->step_graphs = true;
  const auto reqs = crowd_requests(128);
  const std::vector<Tensor> together = run_crowd(*engine, reqs);
  ASSERT_EQ(together.size(), reqs.size());
  EXPECT_TRUE(engine->step_graphs) << "a capture failed and the engine fell back to eager steps";
  engine->step_graphs = false;  // alone: the plain eager engine
  for (size_t k = 0; k < reqs.size(); ++k) {
    const Tensor alone = run_alone(*engine, reqs[k]);
    ASSERT_TRUE(together[k].defined() && alone.defined()) << k;
    const double e = relative_l2(together[k], alone);
    std::printf("[gpu] crowd through graphs vs alone eager, %s: relative L2 %.2e\n", reqs[k].sampler.c_str(), e);
    EXPECT_LE(e, 1e-2) << reqs[k].sampler;
  }
}

// SD 1.5 shapes (every kernel the real model uses): 4 graph steps equal 4 eager steps up to
// fp16 rounding.
TEST(CudaGraphs, Sd15GraphStepsEqualEagerSteps) {
  SKIP_WITHOUT_GPU();
  std::string path;
  if (const char* p = std::getenv("SDSERVE_SD15_MODEL")) {
    path = p;
  } else {
    path = (std::filesystem::temp_directory_path() / "sdserve-sd15-test").string();
    if (!std::filesystem::exists(path + "/model_index.json")) {
      ASSERT_TRUE(make_model(*model_preset("sd15"), 7, path).ok());
    }
  }
  auto engine = load(path, Device::cuda(0));
  ASSERT_TRUE(engine);
  ASSERT_TRUE(engine->step_graphs);
  std::vector<GenerationRequest> reqs = {request("euler", 4, 7.5f, 21, 512), request("euler", 4, 7.5f, 22, 512, 2)};
  for (const auto& r : reqs) {
    engine->step_graphs = true;
    const Tensor a = run_alone(*engine, r);
    EXPECT_TRUE(engine->step_graphs) << "a capture failed and the engine fell back to eager steps";
    engine->step_graphs = false;
    const Tensor b = run_alone(*engine, r);
    ASSERT_TRUE(a.defined() && b.defined());
    const double e = relative_l2(a, b);
    std::printf("[gpu] sd15 512x512 batch %d: graph vs eager steps, final latents relative L2 %.2e\n", r.batch_size,
                e);
    // The graph runs the layers before the first attention on half the rows: other kernel
    // choices, other fp16 rounding (~3e-3 after 4 steps; crowds of other batch sizes differ as much).
    EXPECT_LE(e, 1e-2);
  }
}

}  // namespace
}  // namespace sd
