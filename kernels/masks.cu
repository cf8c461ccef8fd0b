// Mask assembly after the coefficient GEMM, in one pass (docs/model.md §6.5; host twin:
// src/post/masks.rs assemble_masks + crop_masks): lin (hp*wp, n) = proto @ coefsᵀ ->
// out (n, hp, wp) = sigmoid(lin)ᵀ, zeroed outside each box's crop window. The crop window is
// computed on the device from the relative boxes (n, 4), so the boxes never travel to the host.
//
// Arithmetic as on the host: sigmoid = 1 / (exp(-v) + 1) (candle's), crop bounds as
// crop_bounds() with padding 1, and the crop as a multiplication by 1 or 0 (so a NaN stays NaN).

extern "C" __global__ void mask_sigmoid_crop(const float* lin, const float* boxes, int n, int hp,
                                             int wp, int crop, float* out) {
  const long long plane = (long long)hp * wp;
  const long long total = (long long)n * plane;
  for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total;
       o += (long long)gridDim.x * blockDim.x) {
    const int i = (int)(o / plane);
    const long long pix = o % plane;
    const float v = lin[pix * n + i];
    const float s = 1.0f / (expf(-v) + 1.0f);
    float keep = 1.0f;
    if (crop) {
      const float* b = boxes + 4 * (long long)i;
      const float fw = (float)wp, fh = (float)hp;
      const float x1 = b[0] * fw, x2 = b[2] * fw;
      const float y1 = b[1] * fh, y2 = b[3] * fh;
      const float cx1 = fmaxf(fminf(x1, x2) - 1.0f, 0.0f);
      const float cy1 = fmaxf(fminf(y1, y2) - 1.0f, 0.0f);
      const float cx2 = fminf(fmaxf(x1, x2) + 1.0f, fw);
      const float cy2 = fminf(fmaxf(y1, y2) + 1.0f, fh);
      const float r = (float)(pix / wp), q = (float)(pix % wp);
      keep = (r >= cy1 && r < cy2 && q >= cx1 && q < cx2) ? 1.0f : 0.0f;
    }
    out[o] = s * keep;
  }
}
