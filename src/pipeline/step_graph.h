// StepGraphs: a whole denoising step as a captured graph per (image bucket, latent height,
// width): per-row input scaling, the UNet on uncond + cond rows, guidance and every job's
// sampler update (Backend::slot_update), replayed with new per-row parameters each step.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "models/unet.h"
#include "pipeline/time_table.h"
#include "samplers/sampler.h"

namespace sd {

class StepGraphs {
 public:
  // Images per graph; a batch is padded up to the next bucket with rows that read zeros and
  // write nothing. 12 and 24 halve the padding between 8 and 32 (H100: 17-24 images ran the
  // 32-image step, 115 ms, where a 24-image step takes ~87; docs/perf-notes.md, session 9); 48 and
  // 64 serve servers run with a larger --max-batch (session 15), 96 and 128 the largest it takes.
  static constexpr int kBuckets[] = {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128};
  // Smallest bucket holding `images`, or 0 when there are more than the largest bucket.
  static int bucket_for(int images);
  // Whether the graphs run the UNet's layers before the first cross-attention on the uncond
  // half of the rows (UNet::forward's halves_equal; SDSERVE_STEP_HALVES=0: never).
  static bool halves();

  // One job's share of a step. Its state slots are updated in place by the replay.
  struct Input {
    std::vector<Tensor> slots;  // the job's state slots, [n, h, w, C] each (device)
    int x_slot = 0;             // slot holding the latents before the step
    const StepPlan* plan = nullptr;  // the sampler's update for this evaluation
    Tensor noise;               // [n, h, w, C] fresh noise when plan->draws_noise
    Tensor uncond, cond;        // [1, L, D] text contexts (device)
    double timestep = 0;        // model timestep of this evaluation
    // The job's model timesteps of every evaluation, on its first step (else null): with the
    // time table on, all of them are projected at once.
    const std::vector<double>* schedule = nullptr;
    double input_scale = 1;     // sampler's c_in
    float cfg_scale = 1;
    bool cfg = true;            // false: the guided output is the cond prediction alone
  };

  StepGraphs(Backend& backend, const UNet& unet);
  ~StepGraphs();

  // Runs one step for every input: after it (in stream order) each job's slots hold the state
  // its plan describes. Captures the graph for this (bucket, h, w) on first use. Inputs must
  // all have one latent size and hold at most the largest bucket of images together. Tensors
  // the inputs name must stay alive until the step's work is done (synchronize). Device
  // failures throw sd::Error; a capture failure leaves every job's state untouched.
  void run(const std::vector<Input>& inputs);

  size_t graphs() const { return graphs_.size(); }
  // Graphs recorded so far and the seconds that took (every step of the engine waited).
  uint64_t recordings() const { return recordings_; }
  double recording_seconds() const { return recording_seconds_; }
  // Tests: the next N recordings fail as if the device ran out of memory (before any work).
  int fail_records_for_test = 0;
  void clear() { graphs_.clear(); }  // gives back every graph's memory
  // Graphs kept at most; the least recently used one goes first (each holds its working memory).
  // 24: every bucket for two (latent size, context length) keys.
  size_t max_graphs = 24;
  // Graphs recorded from now on gather the ResNets' time projections from a TimeTable (made
  // once per timestep value) instead of computing the time embedding in every step. From
  // SDSERVE_STEP_TIME_TABLE (default on, =0 turns it off); never on when the UNet's projections are not stacked.
  bool time_table = false;
  // Timestep values projected by the table so far (tests).
  int64_t time_table_computed() const;
  // Graphs of at most kContextKvMaxBucket images recorded from now on take the text contexts'
  // K/V projections (UNet::project_context, made when a row's context changes) instead of
  // projecting them in every step. The input is [2B, L, ~25k] (3.8 MB a row for SD 1.5: 246 MB
  // at 32 images, 486 MB at 64). SDSERVE_STEP_CONTEXT_KV (default on, =0 turns it off).
  bool context_kv = false;
  static constexpr int64_t kContextKvMaxBucket = 64;

 private:
  struct Graph {
    int64_t bucket = 0;
    int64_t row_elems = 0;  // h * w * C
    DType dtype = DType::kF32;
    Tensor xin;       // [2B, h, w, C] UNet input: scaled latents of the uncond rows, then the cond rows
    Tensor params;    // u8 on the device: every per-step parameter below, refilled by one copy
    Tensor gather_table, gather_coeffs;  // i64 [B, 3] (latents row, xin row r, xin row B + r), f32 [B, 2, 1]
    Tensor update_table, update_coeffs;  // SlotUpdateTable with direct model outputs: i64 [B, 11], f32 [B, 4, 9]
    Tensor features;  // [2B, C0] timestep features of the uncond rows, then the cond rows
    bool uses_time_table = false;  // recorded with the table: reads time_index, not features
    Tensor time_index;  // i32 [2B]: each UNet row's TimeTable row
    Tensor context;   // [2B, L, D] uncond contexts, then cond contexts ([2B, L, KV] projected)
    bool projected_context = false;  // context holds UNet::project_context() of the rows
    std::vector<Tensor> context_rows;  // [2B]: what each context row was last copied from
    std::unique_ptr<CapturedGraph> graph;
    uint64_t last_used = 0;
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t>;  // bucket, h, w, context length
  Graph& graph_for(const Key& key, const Input& first);
  void record(Graph& g);
  // record(g); when the device runs out of memory and other graphs are kept, drops them all,
  // gives the cached memory back and records once more (their keys re-record on next use).
  void record_or_make_room(const Key& key, Graph& g);

  Backend& backend_;
  const UNet& unet_;
  std::unique_ptr<TimeTable> time_table_;  // made on the first graph that uses it
  std::map<Key, std::unique_ptr<Graph>> graphs_;
  uint64_t uses_ = 0;
  uint64_t recordings_ = 0;
  double recording_seconds_ = 0;
};

}  // namespace sd
