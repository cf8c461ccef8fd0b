// Shared by every kernel source (prepended at compile time, see src/cuda/sources.rs).
//
// No #include on purpose: NVRTC's built-in headers do not cover cuda_fp16.h, and the GPU host
// may not have the CUDA headers at all. f16/bf16 are carried as raw 16-bit patterns and
// converted with PTX cvt instructions / integer rounding instead.

struct f16_t {
  unsigned short x;
};
struct bf16_t {
  unsigned short x;
};

// Arithmetic ("opmath") type per storage type, as in src/ops/mod.rs: f32 for f32/f16/bf16.
template <typename T> struct Opmath { typedef float type; };
template <> struct Opmath<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(f16_t v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
  return f;
}
__device__ __forceinline__ float to_acc(bf16_t v) {
  return __uint_as_float(((unsigned)v.x) << 16);
}

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ f16_t from_acc<f16_t>(float v) {
  f16_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.x) : "f"(v));
  return h;
}
template <> __device__ __forceinline__ bf16_t from_acc<bf16_t>(float v) {
  unsigned u = __float_as_uint(v);
  bf16_t h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    h.x = (unsigned short)((u >> 16) | 0x40u);  // keep NaN a (quiet) NaN
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    h.x = (unsigned short)(u >> 16);
  }
  return h;
}
template <typename T> __device__ __forceinline__ T from_acc(double v);
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
