// CLIP text encoder: embedding lookup (tokens + positions), pre-LN transformer layers with
// causal attention and a quick-GELU/GELU MLP, final layer norm. Names follow transformers'
// CLIPTextModel (`text_model.*`), which io/ produces for every checkpoint layout.
#include "models/clip_text.h"

namespace sd {

StatusOr<std::unique_ptr<ClipTextEncoder>> ClipTextEncoder::load(const TextEncoderConfig& c, const WeightSource& w,
                                                                 Backend& backend) {
  if (c.hidden_size <= 0 || c.num_heads <= 0 || c.hidden_size % c.num_heads != 0 || c.num_layers <= 0) {
    return InvalidArgument(w.origin() + ": text encoder config: hidden_size " + std::to_string(c.hidden_size) +
                           " not divisible by " + std::to_string(c.num_heads) + " heads");
  }
  std::unique_ptr<ClipTextEncoder> m(new ClipTextEncoder(c, backend));
  if (c.hidden_act == "quick_gelu") {
    m->act_ = Activation::kQuickGELU;
  } else if (c.hidden_act == "gelu") {
    m->act_ = Activation::kGELU;
  } else {
    return InvalidArgument(w.origin() + ": text encoder hidden_act '" + c.hidden_act + "' (want quick_gelu or gelu)");
  }
  ModelLoader l(w, backend);
  m->build(l);
  SD_RETURN_IF_ERROR(l.status());
  m->parameters_ = l.parameters();
  return m;
}

std::vector<std::pair<std::string, Shape>> ClipTextEncoder::parameter_shapes(const TextEncoderConfig& c) {
  std::vector<std::pair<std::string, Shape>> shapes;
  auto be = make_cpu_backend(1);
  ClipTextEncoder m(c, *be);
  ModelLoader l(&shapes, *be);
  m.build(l);
  return shapes;
}

void ClipTextEncoder::build(ModelLoader& l) {
  const TextEncoderConfig& c = config_;
  ClipTextEncoder* m = this;
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  m->token_embedding_ = l.tensor("text_model.embeddings.token_embedding.weight", {c.vocab_size, D});
  m->position_embedding_ = l.tensor("text_model.embeddings.position_embedding.weight", {c.max_positions, D});
  m->layers_.resize(static_cast<size_t>(c.num_layers));
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "text_model.encoder.layers." + std::to_string(i);
    Layer& L = m->layers_[i];
    L.ln1.load(l, p + ".layer_norm1", D, c.layer_norm_eps);
    L.ln2.load(l, p + ".layer_norm2", D, c.layer_norm_eps);
    L.qkv.load_stacked(l, {p + ".self_attn.q_proj", p + ".self_attn.k_proj", p + ".self_attn.v_proj"}, D, D);
    L.out.load(l, p + ".self_attn.out_proj", D, D);
    L.fc1.load(l, p + ".mlp.fc1", D, F);
    L.fc2.load(l, p + ".mlp.fc2", F, D);
  }
  m->final_ln_.load(l, "text_model.final_layer_norm", D, c.layer_norm_eps);
}

Tensor ClipTextEncoder::hidden_after(const Tensor& ids, int layers) const {
  Backend& be = backend_;
  SD_ASSERT(ids.ndim() == 2 && ids.dtype() == DType::kI32, "ids must be i32 [B, L], got " + ids.describe());
  SD_ASSERT(layers >= 0 && layers <= config_.num_layers, "hidden_after: bad layer count");
  const int64_t B = ids.dim(0), L = ids.dim(1), D = config_.hidden_size;
  SD_ASSERT(L <= config_.max_positions, "sequence longer than the position table");
  // Device ids are used as they are (no upload: capturable, see pipeline/stage_graphs.h).
  const Tensor device_ids = ids.device() == be.device() ? ids : be.upload(ids, DType::kI32);
  // Position i's embedding is row i of the table: rows [0, L) once per sequence.
  const Tensor positions = position_embedding_.slice_rows(0, L).reshape({1, L, position_embedding_.dim(1)});
  Tensor x = be.add(be.embedding(device_ids, token_embedding_),
                    be.concat_rows(std::vector<Tensor>(static_cast<size_t>(B), positions)));  // [B, L, D]
  for (int i = 0; i < layers; ++i) {
    const Layer& l = layers_[static_cast<size_t>(i)];
    Tensor h = l.ln1(be, x);
    const Tensor qkv = l.qkv(be, h);  // [B, L, 3D]: q | k | v
    Tensor a = be.attention_cols(qkv, 0, qkv, D, 2 * D, D, config_.num_heads, /*causal=*/true);
    x = be.add(l.out(be, a), x);
    h = l.fc2(be, be.activation(l.fc1(be, l.ln2(be, x)), act_));  // [B, L, F] inside
    x = be.add(h, x);
  }
  return x;
}

Tensor ClipTextEncoder::encode(const Tensor& ids, int clip_skip) const {
  SD_ASSERT(clip_skip >= 1 && clip_skip <= config_.num_layers, "clip_skip out of range");
  return final_ln_(backend_, hidden_after(ids, config_.num_layers - (clip_skip - 1)));
}

}  // namespace sd
