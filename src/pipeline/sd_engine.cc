// SdEngine: loading (checkpoint -> tokenizer, text encoder, UNet, VAE on a backend), and the
// three stages of a request. step() runs every job's cond and uncond rows as one UNet batch,
// then guidance and every job's sampler update as one Backend::slot_update (eagerly, or the
// whole step as a captured graph per batch bucket: StepGraphs).
#include "pipeline/sd_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "pipeline/infotext.h"
#include "rng/device_noise.h"
#include "rng/noise.h"
#include "samplers/sampler.h"
#include "samplers/slot_table.h"

namespace sd {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

class SdJob : public Job {
 public:
  GenerationRequest request;
  int n = 1;                     // images
  std::vector<int64_t> seeds;    // per image
  bool cfg = true;               // run the uncond branch
  Tensor cond, uncond;           // [1, 77, D] each
  std::vector<Tensor> slots;     // the sampler's state slots, [n, h, w, 4] each (NHWC, device)
  std::unique_ptr<Sampler> sampler;
  StepPlan plan;                 // the update of the evaluation being stepped
  int plan_x_slot = 0;           // slot holding the latents before that update
  Tensor fresh_noise;            // [n, h, w, 4] this step's noise (ancestral samplers), held until the next step
  std::vector<std::unique_ptr<NoiseGenerator>> noise;  // one per image (seed + k)
  int eval = 0;
  std::string key;
  double seconds_text = 0, seconds_denoise = 0;
  std::vector<Backend::AttentionShape> attention_shapes;  // its first step's, built ahead by begin

  int steps_done() const override { return finished() ? request.steps : sampler->progress_step(eval); }
  int steps_total() const override { return request.steps; }
  bool finished() const override { return eval >= sampler->num_evals(); }
  std::string batch_key() const override { return key; }
  int images() const override { return n; }
  const Tensor& x() const { return slots[static_cast<size_t>(sampler->x_slot())]; }  // latents [n, h, w, 4]
};

std::string model_display_name(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();
  if (p.filename() == "model" && p.has_parent_path()) return p.parent_path().filename().string();
  return p.stem().string();
}

}  // namespace

StatusOr<std::unique_ptr<SdEngine>> SdEngine::load(const std::string& path, const Device& device) {
  std::unique_ptr<SdEngine> e(new SdEngine());
  auto t = Clock::now();
  SD_ASSIGN_OR_RETURN(e->checkpoint_, load_checkpoint(path));
  const Checkpoint& ck = e->checkpoint_;
  SD_ASSIGN_OR_RETURN(e->tokenizer_, ClipTokenizer::load(ck.tokenizer));
  e->load_times.checkpoint_seconds = seconds_since(t);
  t = Clock::now();
  SD_ASSIGN_OR_RETURN(e->backend_, make_backend(device));
  SD_RETURN_IF_ERROR(guard_errors([&] { return e->backend_->synchronize(); }));
  e->load_times.device_seconds = seconds_since(t);
  t = Clock::now();
  Status s = guard_errors([&]() -> Status {
    SD_ASSIGN_OR_RETURN(e->text_encoder_, ClipTextEncoder::load(ck.text_encoder, *ck.text_encoder_weights, *e->backend_));
    SD_ASSIGN_OR_RETURN(e->unet_, UNet::load(ck.unet, *ck.unet_weights, *e->backend_));
    SD_ASSIGN_OR_RETURN(e->vae_, VAE::load(ck.vae, *ck.vae_weights, *e->backend_, /*with_encoder=*/false));
    return e->backend_->synchronize();
  });
  SD_RETURN_IF_ERROR(s);
  e->load_times.weights_seconds = seconds_since(t);
  e->info_.model_name = model_display_name(path);
  e->info_.model_path = path;
  e->info_.family = family_name(ck.family);
  e->info_.device = device.str();
  e->info_.prediction = ck.scheduler.prediction_type;
  e->info_.default_size = ck.vae.sample_size > 0 ? ck.vae.sample_size : 512;
  const char* graphs_env = std::getenv("SDSERVE_CUDA_GRAPHS");
  e->step_graphs = e->backend_->supports_capture() && !(graphs_env && std::strcmp(graphs_env, "0") == 0);
  e->text_graph_ = std::make_unique<TextEncoderGraph>(*e->backend_, *e->text_encoder_);
  e->vae_graph_ = std::make_unique<VaeDecodeGraph>(*e->backend_, *e->vae_, ck.vae.scaling_factor);
  e->text_graph_->enabled = e->vae_graph_->enabled = e->step_graphs;
  if (const char* env = std::getenv("SDSERVE_STEP_IN_FLIGHT"); env && std::strcmp(env, "0") == 0) {
    e->step_in_flight = false;
  }
  if (const char* env = std::getenv("SDSERVE_DECODE_BATCH"); env && *env) {  // images per VAE call (measurements)
    e->max_decode_batch = static_cast<int>(std::clamp(std::strtol(env, nullptr, 10), 1L, 64L));
  }
  const char* cache_env = std::getenv("SDSERVE_PROMPT_CACHE");
  const long cached = cache_env && *cache_env ? std::strtol(cache_env, nullptr, 10) : 64;
  e->prompts_ = PromptCache(static_cast<size_t>(std::clamp(cached, 0L, 4096L)));
  e->max_plan_sizes = max_plan_sizes_setting();
  e->prepare(e->info_.default_size, e->info_.default_size, {1});  // the first request's likely shapes
  return e;
}

void SdEngine::prepare(int width, int height, const std::vector<int>& image_counts) {
  backend_->prepare_attention(backend_->compute_dtype(), attention_shapes(width, height, image_counts));
}

EngineEvents SdEngine::events() const {
  EngineEvents e = events_;
  if (graphs_) {
    e.graph_recordings += graphs_->recordings();
    e.graph_recording_seconds += graphs_->recording_seconds();
  }
  return e;
}

bool SdEngine::preparing(const Job& job) const {
  const auto& j = static_cast<const SdJob&>(job);
  return j.eval == 0 && backend_->attention_preparing(backend_->compute_dtype(), j.attention_shapes);
}

// The UNet's attention shapes per image count: graph steps run a bucket's rows (2 per image,
// the first self-attention on half of them), eager steps 2 rows per image without halves.
std::vector<Backend::AttentionShape> SdEngine::attention_shapes(int width, int height,
                                                                 const std::vector<int>& image_counts) const {
  std::vector<Backend::AttentionShape> shapes;
  if (width < 8 || height < 8) return shapes;
  for (int images : image_counts) {
    const int bucket = step_graphs ? StepGraphs::bucket_for(images) : 0;
    const int64_t rows = 2 * int64_t{bucket > 0 ? bucket : images};
    if (rows <= 0) continue;
    const auto s = unet_->attention_shapes(rows, height / 8, width / 8, tokenizer_->max_length(),
                                           bucket > 0 && StepGraphs::halves());
    shapes.insert(shapes.end(), s.begin(), s.end());
  }
  return shapes;
}

void SdEngine::with_memory_retry(const char* what, const std::function<void()>& fn) {
  const auto attempt = [&] {
    if (fail_memory_for_test_ > 0) {
      --fail_memory_for_test_;
      throw Error(ResourceExhausted("out of GPU memory (SdEngine::fail_memory_for_test)"));
    }
    fn();
  };
  try {
    attempt();
    return;
  } catch (const Error& e) {
    if (e.status().code() != StatusCode::kResourceExhausted) throw;
    ++events_.memory_retries;
    std::fprintf(stderr, "sdserve: out of device memory in %s; dropping every recorded graph and the memory cache, "
                 "then trying once more: %s\n", what, e.status().to_string().c_str());
  }
  release_device_memory();
  attempt();
}

void SdEngine::release_device_memory() {
  (void)backend_->synchronize();  // nothing queued may still use what is given back
  if (graphs_) graphs_->clear();
  text_graph_->clear();
  vae_graph_->clear();
  backend_->release_cached_memory();
}

size_t SdEngine::max_plan_sizes_setting() {
  const char* env = std::getenv("SDSERVE_MAX_PLAN_SIZES");
  if (!env || !*env) return 24;
  return static_cast<size_t>(std::clamp(std::strtol(env, nullptr, 10), 0L, 100000L));
}

void SdEngine::note_plan_size(int width, int height) {
  const auto size = std::make_pair(width, height);
  if (plan_sizes_.count(size)) return;
  if (max_plan_sizes > 0 && plan_sizes_.size() >= max_plan_sizes) {
    std::fprintf(stderr, "sdserve: %dx%d is one image size more than the %zu planned; giving back every graph and "
                 "per-shape plan (those sizes are planned again when next met)\n", width, height, max_plan_sizes);
    release_device_memory();
    backend_->release_shape_plans();
    plan_sizes_.clear();
    ++events_.plan_releases;
  }
  plan_sizes_.insert(size);
}

Tensor SdEngine::encode_prompts(const std::string& prompt, const std::string& negative, int clip_skip) {
  const int L = tokenizer_->max_length();
  Tensor ids = Tensor::empty_host({2, L}, DType::kI32);  // row 0 negative, row 1 prompt
  const std::string* texts[2] = {&negative, &prompt};
  for (int r = 0; r < 2; ++r) {
    ClipTokenizer::Tokens t = tokenizer_->tokenize(*texts[r]);
    if (t.truncated) {
      std::fprintf(stderr, "sdserve: warning: %s is %d tokens, truncated to %d\n", r ? "prompt" : "negative prompt",
                   t.untruncated_len, L);
    }
    for (int i = 0; i < L; ++i) ids.i32()[r * L + i] = t.ids[static_cast<size_t>(i)];
  }
  if (Tensor cached = prompts_.find(ids, clip_skip); cached.defined()) return cached;
  Tensor context;  // [2, 77, D]
  with_memory_retry("the text encoder", [&] { context = text_graph_->encode(ids, clip_skip); });
  prompts_.put(ids, clip_skip, context);
  return context;
}

StatusOr<std::unique_ptr<Job>> SdEngine::begin(const GenerationRequest& request) {
  std::unique_ptr<Job> job;
  SD_RETURN_IF_ERROR(guard_errors([&] { return begin_impl(request, &job); }));
  return job;
}

Status SdEngine::begin_impl(const GenerationRequest& r, std::unique_ptr<Job>* out) {
  SD_RETURN_IF_ERROR(r.validate());
  if (r.clip_skip > text_encoder_->config().num_layers) {
    return InvalidArgument("clip_skip must be at most " + std::to_string(text_encoder_->config().num_layers) +
                           " for this model, got " + std::to_string(r.clip_skip));
  }
  const auto t0 = Clock::now();
  // A size or image count met for the first time: its cuDNN attention plans start building in the
  // background now, under the text encoder and the first step (a no-op for shapes already built).
  note_plan_size(r.width, r.height);
  auto job = std::make_unique<SdJob>();
  job->attention_shapes = attention_shapes(r.width, r.height, {r.batch_size});
  backend_->prepare_attention(backend_->compute_dtype(), job->attention_shapes);
  job->request = r;
  job->n = r.batch_size;
  SamplerOptions options;
  SD_ASSIGN_OR_RETURN(options.schedule, parse_sigma_schedule(r.scheduler));
  SD_ASSIGN_OR_RETURN(job->sampler, make_sampler(r.sampler, checkpoint_.scheduler, r.steps, options));
  job->cfg = r.cfg_scale != 1.0f;

  int64_t seed = r.seed;
  if (seed < 0) seed = static_cast<int64_t>(std::random_device{}() & 0xFFFFFFFFu);
  job->request.seed = seed;
  for (int k = 0; k < job->n; ++k) job->seeds.push_back(seed + k);

  Tensor ctx = encode_prompts(r.prompt, r.negative_prompt, r.clip_skip);
  job->uncond = ctx.slice_rows(0, 1);
  job->cond = ctx.slice_rows(1, 2);

  const int64_t h = r.height / 8, w = r.width / 8, C = unet_->config().in_channels;
  const NoiseSource source = r.rng == RngKind::kCuda ? NoiseSource::kTorchCuda : NoiseSource::kTorchCpu;
  for (int k = 0; k < job->n; ++k) job->noise.push_back(make_noise_generator(source, static_cast<uint64_t>(job->seeds[k])));
  Tensor noise;  // [n, h, w, C] on the device: given latents, or drawn (torch CUDA noise on the GPU itself)
  if (r.init_latents) {
    noise = backend_->upload(nchw_to_nhwc(*r.init_latents));
  } else {
    std::vector<NoiseGenerator*> gens;
    for (auto& g : job->noise) gens.push_back(g.get());
    noise = randn_nhwc(*backend_, gens, h, w, C, backend_->compute_dtype());
  }
  // State slots in one zeroed block [slots, n, h, w, C]; the latents start in x_slot().
  const int64_t S = job->sampler->num_slots();
  const Tensor state = backend_->upload(Tensor::zeros_host({S, job->n, h, w, C}, DType::kF32), backend_->compute_dtype());
  for (int64_t s = 0; s < S; ++s) job->slots.push_back(state.slice_rows(s, s + 1).reshape({job->n, h, w, C}));
  const Tensor x = backend_->scale(noise, static_cast<float>(job->sampler->init_noise_sigma()));  // [n, h, w, C]
  backend_->copy(x, job->x());
  job->key = std::to_string(r.width) + "x" + std::to_string(r.height);
  SD_RETURN_IF_ERROR(backend_->synchronize());
  job->seconds_text = seconds_since(t0);
  *out = std::move(job);
  return Status::Ok();
}

Status SdEngine::step(const std::vector<Job*>& jobs) {
  return guard_errors([&] { return step_impl(jobs); });
}

Status SdEngine::step_impl(const std::vector<Job*>& jobs) {
  if (jobs.empty()) return Status::Ok();
  Backend& be = *backend_;
  const auto t0 = Clock::now();
  for (Job* j : jobs) {
    auto* job = static_cast<SdJob*>(j);
    SD_ASSERT(!job->finished(), "step() on a finished job");
    SD_ASSERT(job->key == static_cast<SdJob*>(jobs[0])->key, "jobs of different sizes in one batch");
  }
  // Each job's update for this evaluation (advances its sampler's bookkeeping) and its noise.
  for (Job* j : jobs) {
    auto* job = static_cast<SdJob*>(j);
    job->plan_x_slot = job->sampler->x_slot();
    job->plan = job->sampler->plan(job->eval);
    job->fresh_noise = Tensor();
    if (job->plan.draws_noise) {
      std::vector<NoiseGenerator*> noise;
      for (auto& g : job->noise) noise.push_back(g.get());
      job->fresh_noise = draw_noise_like(be, job->slots[static_cast<size_t>(job->plan_x_slot)], noise);
    }
  }
  with_memory_retry("a denoising step", [&] {
    if (!step_by_graph(jobs)) step_eager(jobs);  // writes job state only at its end (slot update)
  });
  for (Job* j : jobs) ++static_cast<SdJob*>(j)->eval;
  // At most one step in flight: this returns once the previous step is done, so the caller's
  // host work (admitting, finishing, the next step's tables) overlaps this one on the device.
  // Everything after runs on the same stream; finish() downloads, and so waits for it.
  SD_RETURN_IF_ERROR(step_in_flight ? be.wait_previous_step() : be.synchronize());
  const double secs = seconds_since(t0);
  for (Job* j : jobs) static_cast<SdJob*>(j)->seconds_denoise += secs;
  return Status::Ok();
}

void SdEngine::step_eager(const std::vector<Job*>& jobs) {
  Backend& be = *backend_;
  std::vector<Tensor> xs, ctxs;
  std::vector<double> timesteps;
  int64_t images = 0;
  for (Job* j : jobs) {
    auto* job = static_cast<SdJob*>(j);
    const Tensor& x = job->slots[static_cast<size_t>(job->plan_x_slot)];
    const Tensor xin = be.scale(x, static_cast<float>(job->sampler->input_scale(job->eval)));
    const double t = job->sampler->model_timestep(job->eval);
    for (int branch = job->cfg ? 0 : 1; branch < 2; ++branch) {
      xs.push_back(xin);
      for (int k = 0; k < job->n; ++k) {
        ctxs.push_back(branch == 0 ? job->uncond : job->cond);
        timesteps.push_back(t);
      }
    }
    images += job->n;
  }
  const Tensor out = unet_->forward(be.concat_rows(xs), timesteps, be.concat_rows(ctxs));  // [rows, h, w, 4]
  // Guidance and every job's sampler update in one op, reading the UNet output rows in place.
  SlotUpdateTable update(images, /*direct_model_outputs=*/false);
  int64_t row = 0, image = 0;
  for (Job* j : jobs) {
    auto* job = static_cast<SdJob*>(j);
    const int64_t n = job->n;
    const int64_t cond_row = job->cfg ? row + n : row;
    for (int64_t k = 0; k < n; ++k) {
      SlotRow sr;
      sr.plan = &job->plan;
      if (job->cfg) {
        const double s = job->request.cfg_scale;
        sr.uncond_weight = 1.0 - s;  // uncond + s * (cond - uncond)
        sr.cond_weight = s;
        sr.uncond = row_address(out, row + k);
      }
      sr.cond = row_address(out, cond_row + k);
      if (job->plan.draws_noise) sr.noise = row_address(job->fresh_noise, k);
      for (size_t s = 0; s < job->slots.size(); ++s) sr.slots[s] = row_address(job->slots[s], k);
      update.set_row(image + k, sr);
    }
    row += job->cfg ? 2 * n : n;
    image += n;
  }
  update.apply(be, {}, out.numel() / out.dim(0), out.dtype());
}

// Graph path (StepGraphs): false when it does not apply (graphs off, too many images) or the
// capture failed, which turns graphs off for this engine with a warning; the caller then runs
// the step eagerly (a failed capture wrote no job state).
bool SdEngine::step_by_graph(const std::vector<Job*>& jobs) {
  if (!step_graphs) return false;
  int images = 0;
  for (Job* j : jobs) images += static_cast<SdJob*>(j)->n;
  if (StepGraphs::bucket_for(images) == 0) return false;
  if (!graphs_) graphs_ = std::make_unique<StepGraphs>(*backend_, *unet_);
  std::vector<StepGraphs::Input> inputs;
  for (Job* j : jobs) {
    auto* job = static_cast<SdJob*>(j);
    StepGraphs::Input in;
    in.slots = job->slots;
    in.x_slot = job->plan_x_slot;
    in.plan = &job->plan;
    in.noise = job->fresh_noise;
    in.uncond = job->uncond;
    in.cond = job->cond;
    in.timestep = job->sampler->model_timestep(job->eval);
    if (job->eval == 0) in.schedule = &job->sampler->timesteps();
    in.input_scale = job->sampler->input_scale(job->eval);
    in.cfg_scale = job->request.cfg_scale;
    in.cfg = job->cfg;
    inputs.push_back(in);
  }
  try {
    graphs_->run(inputs);
  } catch (const Error& e) {
    if (e.status().code() == StatusCode::kResourceExhausted) throw;  // not the graphs' fault: see with_memory_retry
    std::fprintf(stderr, "sdserve: warning: CUDA graph step failed, running steps eagerly from now on: %s\n",
                 e.status().to_string().c_str());
    step_graphs = false;
    events_.graph_recordings += graphs_->recordings();  // kept in the totals
    events_.graph_recording_seconds += graphs_->recording_seconds();
    graphs_.reset();
    return false;
  }
  return true;
}

StatusOr<std::vector<GenerationResult>> SdEngine::finish(const std::vector<Job*>& jobs) { return finish(jobs, {}); }

StatusOr<std::vector<GenerationResult>> SdEngine::finish(const std::vector<Job*>& jobs, const ImageReady& on_image) {
  std::vector<GenerationResult> results;
  SD_RETURN_IF_ERROR(guard_errors([&] { return finish_impl(jobs, on_image, &results); }));
  return results;
}

Status SdEngine::finish_impl(const std::vector<Job*>& jobs, const ImageReady& on_image,
                             std::vector<GenerationResult>* out) {
  Backend& be = *backend_;
  {  // The last step may still be in flight (step_in_flight): its time is the denoise's, not the decode's.
    const auto t_wait = Clock::now();
    SD_RETURN_IF_ERROR(be.synchronize());
    const double wait = seconds_since(t_wait);
    for (Job* j : jobs) static_cast<SdJob*>(j)->seconds_denoise += wait;
  }
  // Everything but the pixels first (the infotexts go to on_image with each image).
  std::vector<GenerationResult>& results = *out;
  results.resize(jobs.size());
  struct Slot {
    size_t job, index;
  };
  std::vector<Slot> slots;      // every image of every job, in decode order
  std::vector<Tensor> latents;  // [1, h, w, 4] each
  for (size_t ji = 0; ji < jobs.size(); ++ji) {
    auto* job = static_cast<SdJob*>(jobs[ji]);
    SD_ASSERT(job->finished(), "finish() on an unfinished job");
    GenerationResult& res = results[ji];
    res.seeds = job->seeds;
    InfotextFields f;
    f.sampler_display = job->sampler->info().display_name;
    f.schedule_display = job->request.scheduler == "karras" ? "Karras" : job->request.scheduler == "uniform" ? "Uniform" : "Automatic";
    f.model_name = info_.model_name;
    res.images.resize(static_cast<size_t>(job->n));
    for (int k = 0; k < job->n; ++k) {
      f.seed = job->seeds[static_cast<size_t>(k)];
      res.infotexts.push_back(make_infotext(job->request, f));
      latents.push_back(job->x().slice_rows(k, k + 1));
      slots.push_back({ji, static_cast<size_t>(k)});
    }
    res.infotext = res.infotexts.front();
  }

  // Decode max_decode_batch images per VAE call. The next call is queued as soon as the last
  // one's pixels are on the host, so the device decodes while the host unpacks (and on_image
  // consumes) the images before it.
  const auto t0 = Clock::now();
  const size_t step = static_cast<size_t>(max_decode_batch);
  const auto queue_decode = [&](size_t first) {  // u8 [m, H, W, 3] on the device
    const size_t end = std::min(latents.size(), first + step);
    std::vector<Tensor> part(latents.begin() + static_cast<long>(first), latents.begin() + static_cast<long>(end));
    // Bytes made on the device: a quarter of the f32 download, no host loop per value.
    Tensor pixels;
    with_memory_retry("the VAE decoder", [&] { pixels = be.to_pixels_u8(vae_graph_->decode(be.concat_rows(part))); });
    return pixels;
  };
  Tensor queued = latents.empty() ? Tensor() : queue_decode(0);
  for (size_t first = 0; first < latents.size(); first += step) {
    const Tensor pixels = be.download(queued);  // u8 [m, H, W, 3]
    if (first + step < latents.size()) queued = queue_decode(first + step);
    const int64_t H = pixels.dim(1), W = pixels.dim(2);
    for (int64_t m = 0; m < pixels.dim(0); ++m) {
      const uint8_t* src = pixels.data<uint8_t>() + m * H * W * 3;
      const Slot& at = slots[first + static_cast<size_t>(m)];
      Image& im = results[at.job].images[at.index];
      im = Image{static_cast<int>(W), static_cast<int>(H), std::vector<uint8_t>(src, src + H * W * 3)};
      if (on_image) on_image(at.job, at.index, im, results[at.job].infotexts[at.index]);
    }
  }
  SD_RETURN_IF_ERROR(be.synchronize());
  const double decode_secs = seconds_since(t0);

  for (size_t ji = 0; ji < jobs.size(); ++ji) {
    auto* job = static_cast<SdJob*>(jobs[ji]);
    GenerationResult& res = results[ji];
    res.final_latents = nhwc_to_nchw(be.download(job->x()));
    res.seconds_text = job->seconds_text;
    res.seconds_denoise = job->seconds_denoise;
    res.seconds_decode = decode_secs;
  }
  return Status::Ok();
}

}  // namespace sd
