// Bilinear resize with PyTorch's align_corners=False rule; the device twin of
// src/ops/interp.rs (same formula, same rounding order; compile with --fmad=false for bitwise
// agreement with the CPU op). The traversal and taps are resize_each in the prelude.

template <typename T> struct StoreAs {
  T* dst;
  __device__ __forceinline__ void operator()(long long o, long long, typename Opmath<T>::type v) const {
    dst[o] = from_acc<T>(v);
  }
};

// src: `planes` contiguous (h, w) planes; dst: `planes` (oh, ow) planes. One thread per output.
#define RESIZE(NAME, T)                                                                        \
  extern "C" __global__ void NAME(const T* src, T* dst, long long planes, int h, int w, int oh, \
                                  int ow) {                                                    \
    resize_each<typename Opmath<T>::type>(planes, h, w, oh, ow, PlaneLoad<T>{src, h, w},        \
                                          StoreAs<T>{dst});                                    \
  }
RESIZE(resize_bilinear_f32, float)
RESIZE(resize_bilinear_f64, double)
RESIZE(resize_bilinear_f16, f16_t)
RESIZE(resize_bilinear_bf16, bf16_t)

struct StoreAbove {
  unsigned char* dst;
  float thresh;
  __device__ __forceinline__ void operator()(long long o, long long, float v) const {
    dst[o] = v > thresh ? 1 : 0;
  }
};

// The same resize of f32 planes, thresholded: dst = (value > thresh) as 0/1 bytes. The device twin
// of src/ops/interp.rs's resize_threshold_planes (mask upsampling to the image, eval.py --image).
extern "C" __global__ void resize_threshold_u8(const float* src, unsigned char* dst,
                                               long long planes, int h, int w, int oh, int ow,
                                               float thresh) {
  resize_each<float>(planes, h, w, oh, ow, PlaneLoad<float>{src, h, w}, StoreAbove{dst, thresh});
}
