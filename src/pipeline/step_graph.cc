// StepGraphs: packs a step's per-row parameters (input-scaling gather table, slot-update table
// and coefficients with guidance folded in, timestep features or time-table rows) into one host
// buffer, uploads it with one copy, copies (or projects) changed context rows, and replays the step.
#include "pipeline/step_graph.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "samplers/slot_table.h"

namespace sd {
namespace {

// Byte offsets of the per-step parameters inside a graph's parameter block.
struct ParamLayout {
  size_t gather_table = 0, gather_coeffs = 0, update_table = 0, update_coeffs = 0, features = 0, time_index = 0,
         total = 0;
};

constexpr int kUpdateColumns = SlotUpdateTable::kInputs - 2 + SlotUpdateTable::kOutputs;  // direct model outputs

ParamLayout param_layout(int64_t B, int64_t feature_channels, DType feature_dtype) {
  auto align = [](size_t x) { return (x + 255) / 256 * 256; };
  ParamLayout l;
  size_t at = 0;
  l.gather_table = at;
  at = align(at + static_cast<size_t>(B * 3) * 8);
  l.gather_coeffs = at;
  at = align(at + static_cast<size_t>(B * 2) * 4);
  l.update_table = at;
  at = align(at + static_cast<size_t>(B * kUpdateColumns) * 8);
  l.update_coeffs = at;
  at = align(at + static_cast<size_t>(B * SlotUpdateTable::kOutputs * SlotUpdateTable::kInputs) * 4);
  l.features = at;
  at = align(at + static_cast<size_t>(2 * B * feature_channels) * dtype_size(feature_dtype));
  l.time_index = at;
  at = align(at + static_cast<size_t>(2 * B) * 4);
  l.total = at;
  return l;
}

Tensor view(const Tensor& block, size_t offset, Shape shape, DType dtype) {
  return Tensor(block.storage(), block.offset_bytes() + offset, std::move(shape), dtype);
}

void put(const Tensor& host_block, size_t offset, const Tensor& host) {
  std::memcpy(static_cast<char*>(host_block.raw()) + offset, host.raw(), host.nbytes());
}

int64_t address(const Tensor& t, int64_t row) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(row_address(t, row))); }

}  // namespace

// On unless the variable is "0" (measured on the H100 in session 12: docs/perf-notes.md).
bool switch_on(const char* name) {
  const char* env = std::getenv(name);
  return !(env && env[0] == '0');
}

StepGraphs::StepGraphs(Backend& backend, const UNet& unet)
    : time_table(switch_on("SDSERVE_STEP_TIME_TABLE") && unet.time_projection_width() > 0),
      context_kv(switch_on("SDSERVE_STEP_CONTEXT_KV") && unet.context_projection_width() > 0),
      backend_(backend),
      unet_(unet) {}

StepGraphs::~StepGraphs() = default;

int64_t StepGraphs::time_table_computed() const { return time_table_ ? time_table_->computed() : 0; }

// Whether the UNet runs its layers before the first cross-attention on the uncond half of a bucket
// of B images only (the first transformer's self-attention included). Default: always (H100,
// session 14: batch 1 4.92 / 4.86 vs 4.93 / 4.95 ms, batch 16 54.0 / 53.8 vs 55.0, batch 32 105.9
// vs 108.2 / 108.6 ms against the half mode that stopped before the attention). SDSERVE_STEP_HALVES=0:
// never.
bool StepGraphs::halves() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_STEP_HALVES");
    return !(env && env[0] == '0');
  }();
  return on;
}

int StepGraphs::bucket_for(int images) {
  for (int b : kBuckets)
    if (images <= b) return b;
  return 0;
}

StepGraphs::Graph& StepGraphs::graph_for(const Key& key, const Input& first) {
  auto it = graphs_.find(key);
  if (it != graphs_.end()) {
    it->second->last_used = ++uses_;
    return *it->second;
  }
  while (!graphs_.empty() && graphs_.size() >= std::max<size_t>(1, max_graphs)) {
    auto oldest = graphs_.begin();
    for (auto i = graphs_.begin(); i != graphs_.end(); ++i)
      if (i->second->last_used < oldest->second->last_used) oldest = i;
    graphs_.erase(oldest);
  }
  Backend& be = backend_;
  const auto [B, h, w, L] = key;
  const UNetConfig& c = unet_.config();
  const Tensor& x = first.slots.front();  // [n, h, w, C]
  auto g = std::make_unique<Graph>();
  g->bucket = B;
  g->last_used = ++uses_;
  g->row_elems = h * w * x.dim(3);
  g->dtype = x.dtype();
  // Zero-filled so the padding rows hold finite values from the start.
  g->xin = be.upload(Tensor::zeros_host({2 * B, h, w, x.dim(3)}, DType::kF32), x.dtype());
  const int64_t c0 = c.block_out_channels[0];
  const DType fdt = be.compute_dtype();
  const ParamLayout l = param_layout(B, c0, fdt);
  g->params = be.upload(Tensor::zeros_host({static_cast<int64_t>(l.total)}, DType::kU8), DType::kU8);
  g->gather_table = view(g->params, l.gather_table, {B, 3}, DType::kI64);
  g->gather_coeffs = view(g->params, l.gather_coeffs, {B, 2, 1}, DType::kF32);
  g->update_table = view(g->params, l.update_table, {B, kUpdateColumns}, DType::kI64);
  g->update_coeffs = view(g->params, l.update_coeffs, {B, SlotUpdateTable::kOutputs, SlotUpdateTable::kInputs}, DType::kF32);
  g->features = view(g->params, l.features, {2 * B, c0}, fdt);
  g->uses_time_table = time_table && unet_.time_projection_width() > 0;
  g->time_index = view(g->params, l.time_index, {2 * B}, DType::kI32);
  if (g->uses_time_table && !time_table_) time_table_ = std::make_unique<TimeTable>(be, unet_);
  g->projected_context = context_kv && B <= kContextKvMaxBucket && unet_.context_projection_width() > 0;
  const int64_t width = g->projected_context ? unet_.context_projection_width() : first.cond.dim(2);
  g->context = be.upload(Tensor::zeros_host({2 * B, L, width}, DType::kF32), first.cond.dtype());
  g->context_rows.resize(static_cast<size_t>(2 * B));
  return *graphs_.emplace(key, std::move(g)).first->second;
}

void StepGraphs::record_or_make_room(const Key& key, Graph& g) {
  const auto attempt = [&] {
    if (fail_records_for_test > 0) {
      --fail_records_for_test;
      throw Error(ResourceExhausted("out of GPU memory (StepGraphs::fail_records_for_test)"));
    }
    record(g);
  };
  try {
    attempt();
    return;
  } catch (const Error& e) {
    if (e.status().code() != StatusCode::kResourceExhausted || graphs_.size() <= 1) throw;
    std::fprintf(stderr, "sdserve: out of device memory recording a step graph; dropping the other %zu graphs: %s\n",
                 graphs_.size() - 1, e.status().to_string().c_str());
  }
  for (auto it = graphs_.begin(); it != graphs_.end();) it = it->first == key ? std::next(it) : graphs_.erase(it);
  backend_.release_cached_memory();
  attempt();
}

// The captured function: reads only the graph's static inputs; writes xin and, through the
// update table, the jobs' state slots.
void StepGraphs::record(Graph& g) {
  Backend& be = backend_;
  const UNet& unet = unet_;
  Graph* gp = &g;
  const TimeTable* table = g.uses_time_table ? time_table_.get() : nullptr;
  g.graph = be.capture([&be, &unet, gp, table] {
    const int64_t B = gp->bucket;
    be.slot_update({}, gp->gather_table, gp->gather_coeffs, gp->row_elems, gp->dtype);  // xin rows r, B + r
    // xin rows B + r repeat rows r (same latents, scale and timestep; padding rows are zeros
    // in both halves): the UNet runs its layers before the first cross-attention on B rows only.
    const bool projected = gp->projected_context;
    const Tensor out =
        table ? unet.forward_projected(gp->xin, be.embedding(gp->time_index, table->table()), gp->context,
                                       StepGraphs::halves(), projected)                                // [2B, h, w, C]
              : unet.forward(gp->xin, gp->features, gp->context, StepGraphs::halves(), projected);  // [2B, h, w, C]
    be.slot_update({out.slice_rows(0, B), out.slice_rows(B, 2 * B)}, gp->update_table, gp->update_coeffs,
                   gp->row_elems, gp->dtype);
  });
}

void StepGraphs::run(const std::vector<Input>& inputs) {
  SD_ASSERT(!inputs.empty(), "StepGraphs::run: no inputs");
  Backend& be = backend_;
  const Input& first = inputs.front();
  SD_ASSERT(!first.slots.empty(), "StepGraphs::run: a job without state slots");
  const Tensor& x0 = first.slots.front();
  int images = 0;
  for (const Input& in : inputs) {
    SD_ASSERT(!in.slots.empty() && in.plan != nullptr && in.x_slot >= 0 && in.x_slot < static_cast<int>(in.slots.size()),
              "StepGraphs::run: a job without slots or plan");
    for (const Tensor& s : in.slots) {
      SD_ASSERT(s.ndim() == 4 && s.dim(1) == x0.dim(1) && s.dim(2) == x0.dim(2) && s.dim(3) == x0.dim(3) &&
                    s.dim(0) == in.slots.front().dim(0) && s.dtype() == x0.dtype(),
                "StepGraphs::run: inputs of different shapes: " + s.describe() + " vs " + x0.describe());
    }
    SD_ASSERT(in.cond.shape() == first.cond.shape() && in.uncond.shape() == first.cond.shape(),
              "StepGraphs::run: contexts of different shapes: " + in.cond.describe() + " vs " + first.cond.describe());
    SD_ASSERT(!in.plan->draws_noise || (in.noise.defined() && in.noise.shape() == in.slots.front().shape() &&
                                        in.noise.dtype() == x0.dtype()),
              "StepGraphs::run: the plan draws noise but the job has none of its shape");
    images += static_cast<int>(in.slots.front().dim(0));
  }
  const int64_t B = bucket_for(images);
  SD_ASSERT(B > 0, "StepGraphs::run: " + std::to_string(images) + " images exceed the largest bucket");
  const Key key{B, x0.dim(1), x0.dim(2), first.cond.dim(1)};
  Graph& g = graph_for(key, first);

  // Host side of the per-row parameters; padding rows read nothing, write zeros into xin
  // and nothing else, at t = 0.
  Tensor gather_table = Tensor::zeros_host({B, 3}, DType::kI64);     // [B, 3]
  Tensor gather_coeffs = Tensor::zeros_host({B, 2, 1}, DType::kF32);  // [B, 2, 1]
  SlotUpdateTable update(B, /*direct_model_outputs=*/true);
  std::vector<double> timesteps(static_cast<size_t>(2 * B), 0.0);
  for (int64_t k = 0; k < B; ++k) {
    gather_table.data<int64_t>()[3 * k + 1] = address(g.xin, k);
    gather_table.data<int64_t>()[3 * k + 2] = address(g.xin, B + k);
  }
  int64_t r = 0;
  for (const Input& in : inputs) {
    const int64_t n = in.slots.front().dim(0);
    const Tensor& x = in.slots[static_cast<size_t>(in.x_slot)];
    for (int64_t k = 0; k < n; ++k) {
      const int64_t row = r + k;
      gather_table.data<int64_t>()[3 * row] = address(x, k);
      gather_coeffs.f32()[2 * row] = gather_coeffs.f32()[2 * row + 1] = static_cast<float>(in.input_scale);
      SlotRow sr;
      sr.plan = in.plan;
      sr.uncond_weight = in.cfg ? 1.0 - static_cast<double>(in.cfg_scale) : 0.0;  // uncond + s * (cond - uncond)
      sr.cond_weight = in.cfg ? static_cast<double>(in.cfg_scale) : 1.0;
      if (in.plan->draws_noise) sr.noise = row_address(in.noise, k);
      for (size_t s = 0; s < in.slots.size(); ++s) sr.slots[s] = row_address(in.slots[s], k);
      update.set_row(row, sr);
      timesteps[static_cast<size_t>(row)] = timesteps[static_cast<size_t>(B + row)] = in.timestep;
      // Contexts change only when the jobs do: copy a row only if it came from elsewhere.
      // Holding the source tensor keeps its memory from being reused under the same address.
      const std::pair<int64_t, const Tensor*> rows[2] = {{row, &in.uncond}, {B + row, &in.cond}};
      for (const auto& [crow, src] : rows) {
        Tensor& last = g.context_rows[static_cast<size_t>(crow)];
        if (last.defined() && last.raw() == src->raw()) continue;
        be.copy(g.projected_context ? unet_.project_context(*src) : *src, g.context.slice_rows(crow, crow + 1));
        last = *src;
      }
    }
    r += n;
  }

  // One upload of every per-step parameter.
  const DType fdt = g.features.dtype();
  const ParamLayout l = param_layout(B, g.features.dim(1), fdt);
  Tensor block = Tensor::zeros_host({static_cast<int64_t>(l.total)}, DType::kU8);
  put(block, l.gather_table, gather_table);
  put(block, l.gather_coeffs, gather_coeffs);
  put(block, l.update_table, update.table());
  put(block, l.update_coeffs, update.coeffs());
  if (g.uses_time_table) {
    std::vector<double> later;  // new jobs' whole schedules
    for (const Input& in : inputs) {
      if (in.schedule) later.insert(later.end(), in.schedule->begin(), in.schedule->end());
    }
    const std::vector<int32_t> rows = time_table_->rows_for(timesteps, later);
    std::memcpy(static_cast<char*>(block.raw()) + l.time_index, rows.data(), rows.size() * sizeof(int32_t));
  } else {
    const Tensor features = unet_.timestep_features_of(timesteps);  // host f32 [2B, C0]
    put(block, l.features, fdt == DType::kF32 ? features : convert_host(features, fdt));
  }

  if (!g.graph) {
    // Recording may run the function (the CUDA backend runs it once eagerly first): with
    // all-zero tables it writes no job state.
    be.copy(be.upload(Tensor::zeros_host({static_cast<int64_t>(l.total)}, DType::kU8), DType::kU8), g.params);
    const auto t0 = std::chrono::steady_clock::now();
    record_or_make_room(key, g);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++recordings_;
    recording_seconds_ += s;
    if (s >= 0.25) {  // a stall every job on this engine waits through: say what it was
      std::fprintf(stderr,
                   "sdserve: recorded the step graph of %lld images at %lldx%lld latents in %.2f s (a new size or "
                   "batch bucket: kernel choices timed, graph captured)\n",
                   static_cast<long long>(B), static_cast<long long>(x0.dim(2)), static_cast<long long>(x0.dim(1)), s);
    }
  }
  be.copy(be.upload(block, DType::kU8), g.params);
  g.graph->replay();
}

}  // namespace sd
