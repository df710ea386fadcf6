# Reference timings of the same ops as gpu_op_timings.cc through PyTorch (fp16, NHWC /
# channels_last, SDPA), for context in docs/perf-notes.md. Run on the GPU machine:
#   python3 tests/gpu/timings/torch_op_timings.py
import torch
import torch.nn.functional as F

torch.backends.cudnn.benchmark = True
dev, dt = "cuda", torch.float16


def bench(fn, reps=15, inner=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / inner)
    times.sort()
    return times[len(times) // 2]


rows = []
for l, lk, h, d in [(4096, 4096, 8, 40), (1024, 1024, 8, 80), (256, 256, 8, 160), (4096, 77, 8, 40),
                    (1024, 1024, 10, 64), (77, 77, 12, 64)]:
    q = torch.randn(2, h, l, d, device=dev, dtype=dt)
    k = torch.randn(2, h, lk, d, device=dev, dtype=dt)
    v = torch.randn(2, h, lk, d, device=dev, dtype=dt)
    causal = l == 77
    ms = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    rows.append((f"attention b2 l{l} lk{lk} h{h} d{d}" + (" causal" if causal else ""), ms,
                 4.0 * 2 * h * l * lk * d / (2 if causal else 1) / ms / 1e9, "TFLOP/s"))
for hw, cin, cout, ks, stride in [(64, 320, 320, 3, 1), (32, 640, 640, 3, 1), (16, 1280, 1280, 3, 1),
                                  (64, 320, 320, 3, 2), (64, 4, 320, 3, 1)]:
    x = torch.randn(2, cin, hw, hw, device=dev, dtype=dt).to(memory_format=torch.channels_last)
    w = (torch.randn(cout, cin, ks, ks, device=dev, dtype=dt) * 0.05).to(memory_format=torch.channels_last)
    b = torch.randn(cout, device=dev, dtype=dt)
    ms = bench(lambda: F.conv2d(x, w, b, stride=stride, padding=1))
    ho = hw // stride
    rows.append((f"conv2d 2x{hw}x{hw}x{cin} -> {cout} k{ks} s{stride}", ms,
                 2.0 * 2 * ho * ho * cout * cin * ks * ks / ms / 1e9, "TFLOP/s"))
for m, k, n in [(8192, 320, 2560), (8192, 1280, 320), (8192, 320, 320), (154, 768, 320)]:
    x = torch.randn(m, k, device=dev, dtype=dt)
    w = torch.randn(n, k, device=dev, dtype=dt) * 0.05
    b = torch.randn(n, device=dev, dtype=dt)
    ms = bench(lambda: F.linear(x, w, b))
    rows.append((f"linear {m}x{k} -> {n} +bias", ms, 2.0 * m * k * n / ms / 1e9, "TFLOP/s"))
x = torch.randn(2, 320, 64, 64, device=dev, dtype=dt).to(memory_format=torch.channels_last)
g = torch.rand(320, device=dev, dtype=dt) + 0.5
bb = torch.randn(320, device=dev, dtype=dt)
ms = bench(lambda: F.silu(F.group_norm(x, 32, g, bb, 1e-5)))
rows.append(("group_norm+silu 2x64x64x320 g32", ms, 2 * x.numel() * 2 / ms / 1e6, "GB/s"))
s = torch.randn(2, 4096, 320, device=dev, dtype=dt)
ms = bench(lambda: F.layer_norm(s, (320,), g, bb, 1e-5))
rows.append(("layer_norm 2x4096x320", ms, 2 * s.numel() * 2 / ms / 1e6, "GB/s"))
xg = torch.randn(2, 4096, 2560, device=dev, dtype=dt)
ms = bench(lambda: (lambda a, gate: a * F.gelu(gate))(*xg.chunk(2, dim=-1)))
rows.append(("geglu 2x4096x2560", ms, 1.5 * xg.numel() * 2 / ms / 1e6, "GB/s"))

print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
print(f"{'op':48s} {'ms':>10s} {'rate':>12s}")
for name, ms, rate, unit in rows:
    print(f"{name:48s} {ms:10.4f} {rate:8.1f} {unit}")
