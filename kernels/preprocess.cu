// The network input in one pass: uint8 HWC RGB image (h, w, 3) -> (1, 3, oh, ow) in T. The
// device twin of src/engine/preprocess.rs (FastBaseTransform): half-pixel bilinear resize of the image
// as f32 (the resize kernel's taps and rounding order), then the config's normalisation, rounded
// once to T. It replaces five launches (u8->f32, permute, resize, subtract, divide) and two
// full-size f32 intermediates.
//
// Normalisation: `divide` != 0: (v - a[c]) / b[c] (ResNet mean/std, divided as the reference
// does); otherwise v * b[c] + a[c] (DarkNet's x / 255, which candle computes as an affine).

// Channel p of an interleaved (h, w, 3) uint8 image, as f32.
struct HwcLoad {
  const unsigned char* img;
  int w;
  __device__ __forceinline__ float operator()(long long p, int y, int x) const {
    return (float)img[((long long)y * w + x) * 3 + p];
  }
};

template <typename T> struct StoreNormalized {
  T* out;
  float a0, a1, a2, b0, b1, b2;
  int divide;
  __device__ __forceinline__ void operator()(long long o, long long c, float v) const {
    const float a = c == 0 ? a0 : (c == 1 ? a1 : a2);
    const float b = c == 0 ? b0 : (c == 1 ? b1 : b2);
    out[o] = from_acc<T>(divide ? (v - a) / b : v * b + a);
  }
};

template <typename T>
__device__ void preprocess_rgb(const unsigned char* img, int h, int w, int oh, int ow, float a0,
                               float a1, float a2, float b0, float b1, float b2, int divide,
                               T* out) {
  resize_each<float>(3, h, w, oh, ow, HwcLoad{img, w},
                     StoreNormalized<T>{out, a0, a1, a2, b0, b1, b2, divide});
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
