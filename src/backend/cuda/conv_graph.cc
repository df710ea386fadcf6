// cuDNN graph-API convolution plans: NHWC tensors described by (N,C,H,W) dims with NHWC
// strides, a cross-correlation descriptor with f32 compute, an operation graph holding one
// forward convolution and optional pointwise adds (runtime fusion), heuristic engine configs,
// and the execution plans that finalize.
#include "backend/cuda/conv_graph.h"

#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cudnn_plans.h"

namespace sd::cuda {

namespace {

constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3, kUidBias = 4, kUidRow = 5, kUidResidual = 6;
constexpr int64_t kUidVirtual = 100;  // + index: f32 intermediates between the fused ops
constexpr int kDefaultCandidates = 8;  // SDSERVE_CUDNN_CANDIDATES overrides
constexpr int64_t kMaxWorkspace = int64_t{512} << 20;

// Owns a descriptor until released.
struct Desc {
  cudnnBackendDescriptor_t d = nullptr;
  explicit Desc(cudnnBackendDescriptorType_t type) { SD_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d)); }
  ~Desc() {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t release() {
    cudnnBackendDescriptor_t r = d;
    d = nullptr;
    return r;
  }
};

void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t n,
         const void* value) {
  SD_CUDNN_CHECK(cudnnBackendSetAttribute(d, name, type, n, value));
}

// NHWC tensor with logical dims (n, c, h, w); `is_virtual`: an intermediate of the graph.
cudnnBackendDescriptor_t make_tensor(int64_t uid, int64_t n, int64_t c, int64_t h, int64_t w, cudnnDataType_t dt,
                                     int64_t alignment, bool is_virtual = false) {
  Desc t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t dims[4] = {n, c, h, w};
  const int64_t strides[4] = {c * h * w, 1, w * c, c};
  if (is_virtual) {
    const bool v = true;
    set(t.d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v);
  }
  set(t.d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
  set(t.d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
  set(t.d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
  set(t.d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
  set(t.d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  SD_CUDNN_CHECK(cudnnBackendFinalize(t.d));
  return t.release();
}

// out = a + b (b may broadcast), f32 math; the descriptors are kept in `keep`.
cudnnBackendDescriptor_t make_add(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t out,
                                  std::vector<cudnnBackendDescriptor_t>& keep) {
  Desc pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  const cudnnPointwiseMode_t mode = CUDNN_POINTWISE_ADD;
  const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  set(pw.d, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
  set(pw.d, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
  SD_CUDNN_CHECK(cudnnBackendFinalize(pw.d));
  keep.push_back(pw.release());
  Desc op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  set(op.d, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &keep.back());
  set(op.d, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
  set(op.d, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
  set(op.d, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &out);
  SD_CUDNN_CHECK(cudnnBackendFinalize(op.d));
  keep.push_back(op.release());
  return keep.back();
}

void destroy_all(std::vector<cudnnBackendDescriptor_t>& ds) {
  for (cudnnBackendDescriptor_t d : ds) {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
  ds.clear();
}

// Builds the candidate plans into `out` (throws sd::Error on API failures).
void build(cudnnHandle_t handle, const ConvGraphKey& key, int64_t ho, int64_t wo, ConvGraphPlan& out) {
  const ConvKey& k = key.conv;
  const cudnnDataType_t dt = cudnn_data_type(k.dtype);
  const int64_t align = key.alignment;
  const int epi = key.epilogue;
  const int n_adds = ((epi & kEpiBias) ? 1 : 0) + ((epi & kEpiRow) ? 1 : 0) + ((epi & kEpiResidual) ? 1 : 0);
  const cudnnBackendDescriptor_t x = out.keep.emplace_back(make_tensor(kUidX, k.b, k.cin, k.h, k.w, dt, align));
  const cudnnBackendDescriptor_t w =
      out.keep.emplace_back(make_tensor(kUidW, k.cout, k.cin, k.kernel, k.kernel, dt, align));
  const cudnnBackendDescriptor_t y = out.keep.emplace_back(make_tensor(kUidY, k.b, k.cout, ho, wo, dt, align));
  // The convolution writes y itself, or an f32 virtual tensor that the adds carry on to y.
  int64_t next_virtual = kUidVirtual;
  const auto virtual_out = [&] {
    return out.keep.emplace_back(make_tensor(next_virtual++, k.b, k.cout, ho, wo, CUDNN_DATA_FLOAT, align, true));
  };
  cudnnBackendDescriptor_t conv_y = n_adds ? virtual_out() : y;

  Desc conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const int64_t spatial = 2;
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t pad[2] = {k.padding, k.padding}, stride[2] = {k.stride, k.stride}, dilation[2] = {1, 1};
  set(conv.d, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial);
  set(conv.d, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
  set(conv.d, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
  set(conv.d, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad);
  set(conv.d, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad);
  set(conv.d, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilation);
  set(conv.d, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride);
  SD_CUDNN_CHECK(cudnnBackendFinalize(conv.d));
  out.keep.push_back(conv.release());

  Desc op(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
  SD_ASSERT(!(epi & kEpiAccumulate) || n_adds == 0, "conv graph: accumulate takes no pointwise adds");
  const float alpha = 1.f, beta = (epi & kEpiAccumulate) ? 1.f : 0.f;
  set(op.d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
  set(op.d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w);
  set(op.d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv_y);
  set(op.d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &out.keep.back());
  set(op.d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha);
  set(op.d, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta);
  SD_CUDNN_CHECK(cudnnBackendFinalize(op.d));
  std::vector<cudnnBackendDescriptor_t> ops{out.keep.emplace_back(op.release())};

  // Epilogue: each add reads the previous result and writes the next virtual tensor (y last).
  cudnnBackendDescriptor_t cur = conv_y;
  int adds_left = n_adds;
  const auto add = [&](cudnnBackendDescriptor_t operand) {
    cudnnBackendDescriptor_t dst = --adds_left == 0 ? y : virtual_out();
    ops.push_back(make_add(cur, operand, dst, out.keep));
    cur = dst;
  };
  if (epi & kEpiBias) add(out.keep.emplace_back(make_tensor(kUidBias, 1, k.cout, 1, 1, dt, align)));
  if (epi & kEpiRow) add(out.keep.emplace_back(make_tensor(kUidRow, k.b, k.cout, 1, 1, dt, align)));
  if (epi & kEpiResidual) add(out.keep.emplace_back(make_tensor(kUidResidual, k.b, k.cout, ho, wo, dt, align)));

  Desc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  set(graph.d, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()),
      ops.data());
  // Deprecated in cuDNN 9 but still honoured; its absence is not an error.
  cudnnBackendSetAttribute(graph.d, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  SD_CUDNN_CHECK(cudnnBackendFinalize(graph.d));
  out.keep.push_back(graph.release());
  cudnnBackendDescriptor_t graph_d = out.keep.back();

  CudnnCandidates c = find_cudnn_plans(handle, graph_d, cudnn_max_candidates(kDefaultCandidates), kMaxWorkspace);
  out.plans = std::move(c.plans);
  out.workspace = std::move(c.workspace);
  out.keep.insert(out.keep.end(), c.configs.begin(), c.configs.end());
}

}  // namespace

ConvGraphPlans::~ConvGraphPlans() {
  for (auto& [key, plan] : plans_) {
    destroy_all(plan.plans);
    destroy_all(plan.keep);
  }
}

ConvGraphPlan* ConvGraphPlans::get(cudnnHandle_t handle, const ConvGraphKey& key, int64_t ho, int64_t wo) {
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    ConvGraphPlan plan;
    try {
      build(handle, key, ho, wo, plan);
    } catch (const Error&) {
      destroy_all(plan.plans);  // this shape goes to the legacy API
      destroy_all(plan.keep);
      plan.workspace.clear();
    }
    it = plans_.emplace(key, std::move(plan)).first;
  }
  return it->second.plans.empty() ? nullptr : &it->second;
}

cudnnStatus_t conv_graph_execute(cudnnHandle_t handle, const ConvGraphPlan& plan, size_t index, int epilogue,
                                 const ConvGraphOperands& ops, void* workspace) {
  cudnnBackendDescriptor_t pack = nullptr;
  cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  void* ptrs[6] = {const_cast<void*>(ops.x), const_cast<void*>(ops.w), ops.y};
  int64_t uids[6] = {kUidX, kUidW, kUidY};
  int64_t n = 3;
  const auto operand = [&](int flag, int64_t uid, const void* p) {
    if (!(epilogue & flag)) return;
    ptrs[n] = const_cast<void*>(p);
    uids[n++] = uid;
  };
  operand(kEpiBias, kUidBias, ops.bias);
  operand(kEpiRow, kUidRow, ops.row);
  operand(kEpiResidual, kUidResidual, ops.residual);
  st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
  if (st == CUDNN_STATUS_SUCCESS) {
    st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
  }
  if (st == CUDNN_STATUS_SUCCESS) {
    st = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  }
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(pack);
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(handle, plan.plans[index], pack);
  cudnnBackendDestroyDescriptor(pack);
  return st;
}

void conv_graph_choose(ConvGraphPlan& plan, size_t index) {
  for (size_t i = 0; i < plan.plans.size(); ++i) {
    if (i != index) cudnnBackendDestroyDescriptor(plan.plans[i]);
  }
  plan.plans = {plan.plans[index]};
  plan.workspace = {plan.workspace[index]};
  plan.tuned = true;
}

void conv_graph_discard(ConvGraphPlan& plan) {
  destroy_all(plan.plans);
  plan.workspace.clear();
}

}  // namespace sd::cuda
