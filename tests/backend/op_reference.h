// Naive reference implementations of every backend op, written as plain loops with f64
// accumulation on host f32 tensors. They are deliberately simple and share no code with any
// backend, so they can serve as the ground truth of the op-parity tests.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "tensor/tensor.h"

namespace sd::testing::ref {

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);  // bias may be undefined
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding);
Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps, bool silu);
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor softmax(const Tensor& x);
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal);
Tensor activation(const Tensor& x, Activation act);
Tensor geglu(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, float s);
Tensor add_per_channel(const Tensor& x, const Tensor& v);
Tensor lincomb(const std::vector<Tensor>& inputs, const Tensor& coeffs);
Tensor upsample_nearest2x(const Tensor& x);
// y4 [B, H+1, W+1, 4C] -> [B, 2H, 2W, C]: out[b, 2i+a, 2j+c] = y4[b, i+a, j+c, phase 2a+c] (+ bias).
Tensor interleave_phases2x(const Tensor& y4, const Tensor& bias);
Tensor concat_channels(const Tensor& a, const Tensor& b);
Tensor embedding(const Tensor& ids, const Tensor& table);
Tensor concat_rows(const std::vector<Tensor>& parts);
Tensor pad_hw(const Tensor& x, int top, int bottom, int left, int right);
Tensor crop_hw(const Tensor& x, int h0, int h, int w0, int w);

// Scalar activation in f64 (shared by activation, geglu and group_norm's SiLU).
double activate(double x, Activation act);

}  // namespace sd::testing::ref
