// SSD box decoding in one kernel (docs/model.md §6.1; host twin: src/post/decode.rs): loc (P, 4)
// regressions against priors (P, 4, cx cy w h) -> boxes (P, 4, x1 y1 x2 y2), relative and
// unclipped. Replaces the dozen elementwise launches of the tensor version. Same operation order as
// the host (and the reference): variances multiplied into loc first, x2 = x1 + w.

extern "C" __global__ void decode_boxes(const float* loc, const float* priors, int p,
                                        float* out) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p; i += gridDim.x * blockDim.x) {
    const float* l = loc + 4 * (long long)i;
    const float* a = priors + 4 * (long long)i;
    float* o = out + 4 * (long long)i;
    const float cx = a[0] + (l[0] * 0.1f) * a[2];
    const float cy = a[1] + (l[1] * 0.1f) * a[3];
    const float w = a[2] * expf(l[2] * 0.2f);
    const float h = a[3] * expf(l[3] * 0.2f);
    const float x1 = cx - w / 2.0f;
    const float y1 = cy - h / 2.0f;
    o[0] = x1;
    o[1] = y1;
    o[2] = x1 + w;
    o[3] = y1 + h;
  }
}
