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
#ifdef __CUDA_ARCH__
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
  return f;
#else  // the host emulator of tests/it/cuda_emu.rs
  return emu_half_to_float(v.x);
#endif
}
__device__ __forceinline__ float to_acc(bf16_t v) {
  return __uint_as_float(((unsigned)v.x) << 16);
}

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ f16_t from_acc<f16_t>(float v) {
  f16_t h;
#ifdef __CUDA_ARCH__
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.x) : "f"(v));
#else
  h.x = emu_float_to_half(v);
#endif
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

// One output coordinate of a bilinear resize along one axis, PyTorch's align_corners=False rule
// (src/ops/interp.rs axis_taps): source indices i0/i1 and weights l0/l1.
template <typename A>
__device__ __forceinline__ void axis_tap(int dst, int in_size, A scale, int* i0, int* i1, A* l0,
                                         A* l1) {
  A src = scale * ((A)dst + (A)0.5) - (A)0.5;
  if (src < (A)0) src = (A)0;
  int a = (int)floor(src);
  if (a > in_size - 1) a = in_size - 1;
  *i0 = a;
  *i1 = a < in_size - 1 ? a + 1 : a;
  A l = src - (A)a;
  if (l < (A)0) l = (A)0;
  if (l > (A)1) l = (A)1;
  *l1 = l;
  *l0 = (A)1 - l;
}

// Grid-stride over every output of a bilinear resize (align_corners=False) of `planes` (h, w)
// planes to (oh, ow), in opmath A: store(o, p, v) gets output index o (plane-major), its plane p
// and v = (load(p, y0, x0)·lx0 + load(p, y0, x1)·lx1)·ly0 + (load(p, y1, x0)·lx0 +
// load(p, y1, x1)·lx1)·ly1. Rows are interpolated first, then the column, as the CPU op does
// (it caches x-interpolated rows), so the rounding is the same.
template <typename A, typename Load, typename Store>
__device__ __forceinline__ void resize_each(long long planes, int h, int w, int oh, int ow,
                                            const Load& load, const Store& store) {
  const long long total = planes * oh * ow;
  const A sy = (A)h / (A)oh;
  const A sx = (A)w / (A)ow;
  for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total;
       o += (long long)gridDim.x * blockDim.x) {
    const int ox = (int)(o % ow);
    const int oy = (int)((o / ow) % oh);
    const long long p = o / ((long long)ow * oh);
    int y0, y1, x0, x1;
    A ly0, ly1, lx0, lx1;
    axis_tap<A>(oy, h, sy, &y0, &y1, &ly0, &ly1);
    axis_tap<A>(ox, w, sx, &x0, &x1, &lx0, &lx1);
    const A t0 = load(p, y0, x0) * lx0 + load(p, y0, x1) * lx1;
    const A t1 = load(p, y1, x0) * lx0 + load(p, y1, x1) * lx1;
    store(o, p, t0 * ly0 + t1 * ly1);
  }
}

// Reads (h, w) planes of T as opmath values, for resize_each.
template <typename T> struct PlaneLoad {
  const T* src;
  int h, w;
  __device__ __forceinline__ typename Opmath<T>::type operator()(long long p, int y, int x) const {
    return to_acc(src[(p * h + y) * (long long)w + x]);
  }
};

