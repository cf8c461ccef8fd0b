// The network input in one pass: uint8 HWC RGB image (h, w, 3) -> (1, 3, oh, ow) in T. The
// device twin of src/preprocess.rs (FastBaseTransform): half-pixel bilinear resize of the image
// as f32 (the resize kernel's taps and rounding order), then the config's normalisation, rounded
// once to T. It replaces five launches (u8->f32, permute, resize, subtract, divide) and two
// full-size f32 intermediates.
//
// Normalisation: `divide` != 0: (v - a[c]) / b[c] (ResNet mean/std, divided as the reference
// does); otherwise v * b[c] + a[c] (DarkNet's x / 255, which candle computes as an affine).

template <typename T>
__device__ void preprocess_rgb(const unsigned char* img, int h, int w, int oh, int ow, float a0,
                               float a1, float a2, float b0, float b1, float b2, int divide,
                               T* out) {
  const long long plane = (long long)oh * ow;
  const long long total = 3 * plane;
  const float sy = (float)h / (float)oh;
  const float sx = (float)w / (float)ow;
  for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total;
       o += (long long)gridDim.x * blockDim.x) {
    const int ox = (int)(o % ow);
    const int oy = (int)((o / ow) % oh);
    const int c = (int)(o / plane);
    int y0, y1, x0, x1;
    float ly0, ly1, lx0, lx1;
    axis_tap<float>(oy, h, sy, &y0, &y1, &ly0, &ly1);
    axis_tap<float>(ox, w, sx, &x0, &x1, &lx0, &lx1);
    const unsigned char* r0 = img + (long long)y0 * w * 3 + c;
    const unsigned char* r1 = img + (long long)y1 * w * 3 + c;
    const float t0 = (float)r0[x0 * 3] * lx0 + (float)r0[x1 * 3] * lx1;
    const float t1 = (float)r1[x0 * 3] * lx0 + (float)r1[x1 * 3] * lx1;
    const float v = t0 * ly0 + t1 * ly1;
    const float a = c == 0 ? a0 : (c == 1 ? a1 : a2);
    const float b = c == 0 ? b0 : (c == 1 ? b1 : b2);
    out[o] = from_acc<T>(divide ? (v - a) / b : v * b + a);
  }
}

#define PREPROCESS(NAME, T)                                                                    \
  extern "C" __global__ void NAME(const unsigned char* img, int h, int w, int oh, int ow,      \
                                  float a0, float a1, float a2, float b0, float b1, float b2,  \
                                  int divide, T* out) {                                        \
    preprocess_rgb<T>(img, h, w, oh, ow, a0, a1, a2, b0, b1, b2, divide, out);                 \
  }
PREPROCESS(preprocess_rgb_f32, float)
PREPROCESS(preprocess_rgb_f16, f16_t)
PREPROCESS(preprocess_rgb_bf16, bf16_t)
