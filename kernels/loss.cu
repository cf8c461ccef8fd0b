// Training losses on the device. bce_f32 is the device twin of src/train/loss/bce.rs (PyTorch's
// binary_cross_entropy on probabilities, elementwise): (t - 1) * max(log1p(-p), -100)
// - t * max(log(p), -100), in that order. Its backward is candle ops (bce.rs), so only the forward
// is a kernel.

extern "C" __global__ void bce_f32(const float* p, const float* t, float* out, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    const float pi = p[i], ti = t[i];
    out[i] = (ti - 1.0f) * fmaxf(log1pf(-pi), -100.0f) - ti * fmaxf(logf(pi), -100.0f);
  }
}
