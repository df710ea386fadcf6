// FakeEngine implementation: each job's state is a hash chain over (seed, prompt, size,
// step index), so an image only matches the expected one if the job got exactly its steps,
// in order, with its own seed — whatever else shared the batches.
#include "fake_engine.h"

#include <chrono>
#include <thread>

namespace sd::testing {

namespace {
uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 33);
}

uint64_t initial_state(const GenerationRequest& r, int64_t seed) {
  uint64_t h = mix(1469598103934665603ull, static_cast<uint64_t>(seed));
  for (unsigned char c : r.prompt) h = mix(h, c);
  h = mix(h, static_cast<uint64_t>(r.width) << 20 | static_cast<uint64_t>(r.height));
  h = mix(h, static_cast<uint64_t>(r.cfg_scale * 1000));
  return h;
}

Image render(uint64_t state, int width, int height) {
  Image image;
  image.width = width;
  image.height = height;
  image.rgb.resize(static_cast<size_t>(width) * height * 3);
  uint64_t h = state;
  for (size_t i = 0; i < image.rgb.size(); ++i) {
    if (i % 8 == 0) h = mix(h, i);
    image.rgb[i] = static_cast<uint8_t>(h >> ((i % 8) * 8));
  }
  return image;
}

struct FakeJob : Job {
  GenerationRequest request;
  int id = 0, done = 0;
  std::vector<uint64_t> states;  // per image
  std::vector<int64_t> seeds;
  int steps_done() const override { return done; }
  int steps_total() const override { return request.steps; }
  std::string batch_key() const override { return std::to_string(request.width) + "x" + std::to_string(request.height); }
  int images() const override { return request.batch_size; }
};
}  // namespace

FakeEngine::FakeEngine(std::string device) {
  info_.model_name = "fake-model";
  info_.model_path = "/models/fake-model.safetensors";
  info_.family = "sd1";
  info_.device = std::move(device);
  info_.prediction = "epsilon";
  info_.default_size = 64;
}

Image FakeEngine::expected_image(const GenerationRequest& r, int64_t seed, int k) {
  uint64_t state = initial_state(r, seed + k);
  for (int s = 0; s < r.steps; ++s) state = mix(state, static_cast<uint64_t>(s));
  return render(state, r.width, r.height);
}

StatusOr<std::unique_ptr<Job>> FakeEngine::begin(const GenerationRequest& request) {
  SD_RETURN_IF_ERROR(request.validate());
  if (request.prompt == "fail in begin") return Internal("fake failure in begin");
  if (request.prompt == "out of memory in begin") {
    return ResourceExhausted("out of GPU memory: fake failure in begin (0 of 81079 MiB free on the device)");
  }
  auto job = std::make_unique<FakeJob>();
  job->request = request;
  SD_ASSERT(request.seed >= 0, "the scheduler resolves seed -1");
  {
    std::lock_guard<std::mutex> lock(mu_);
    job->id = next_id_++;
  }
  for (int k = 0; k < request.batch_size; ++k) {
    job->seeds.push_back(request.seed + k);
    job->states.push_back(initial_state(request, request.seed + k));
  }
  ++begun;
  return std::unique_ptr<Job>(std::move(job));
}

bool FakeEngine::preparing(const Job& j) const {
  const auto& job = static_cast<const FakeJob&>(j);
  return job.done == 0 && job.request.width == preparing_width.load();
}

Status FakeEngine::step(const std::vector<Job*>& jobs) {
  StepRecord record;
  std::string key;
  for (Job* j : jobs) {
    auto* job = static_cast<FakeJob*>(j);
    SD_ASSERT(!job->finished(), "step on a finished job");
    if (key.empty()) key = job->batch_key();
    SD_ASSERT(key == job->batch_key(), "jobs with different batch keys in one step");
    record.job_ids.push_back(job->id);
    record.steps_done.push_back(job->done);
    record.steps_total.push_back(job->steps_total());
    record.images += job->images();
    if (job->request.prompt == "fail in step" && job->done == 1) return Internal("fake failure in step");
    for (auto& s : job->states) s = mix(s, static_cast<uint64_t>(job->done));
    ++job->done;
    ++steps_run;
  }
  if (int d = step_delay_ms.load(); d > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d));
  std::lock_guard<std::mutex> lock(mu_);
  records_.push_back(std::move(record));
  return Status::Ok();
}

StatusOr<std::vector<GenerationResult>> FakeEngine::finish(const std::vector<Job*>& jobs) {
  std::vector<GenerationResult> out;
  for (Job* j : jobs) {
    auto* job = static_cast<FakeJob*>(j);
    SD_ASSERT(job->finished(), "finish on an unfinished job");
    GenerationResult r;
    for (size_t k = 0; k < job->states.size(); ++k) {
      r.images.push_back(render(job->states[k], job->request.width, job->request.height));
      r.infotexts.push_back(job->request.prompt + "\nSteps: " + std::to_string(job->request.steps) +
                            ", Sampler: " + job->request.sampler + ", Seed: " + std::to_string(job->seeds[k]));
    }
    r.seeds = job->seeds;
    r.infotext = r.infotexts.front();
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<StepRecord> FakeEngine::records() const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_;
}

int FakeEngine::max_batch_images() const {
  std::lock_guard<std::mutex> lock(mu_);
  int best = 0;
  for (const auto& r : records_) best = std::max(best, r.images);
  return best;
}

void FakeEngine::clear_records() {
  std::lock_guard<std::mutex> lock(mu_);
  records_.clear();
}

}  // namespace sd::testing
