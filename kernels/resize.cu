// Bilinear resize with PyTorch's align_corners=False rule; the device twin of
// src/ops/interp.rs (same formula, same rounding order; compile with --fmad=false for bitwise
// agreement with the CPU op).

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

// src: `planes` contiguous (h, w) planes; dst: `planes` (oh, ow) planes. One thread per output.
template <typename T>
__device__ void resize_bilinear(const T* src, T* dst, long long planes, int h, int w, int oh,
                                int ow) {
  typedef typename Opmath<T>::type A;
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
    const T* plane = src + p * h * w;
    const T* r0 = plane + (long long)y0 * w;
    const T* r1 = plane + (long long)y1 * w;
    // Row interpolation first, then the column: the CPU op caches x-interpolated rows.
    const A t0 = to_acc(r0[x0]) * lx0 + to_acc(r0[x1]) * lx1;
    const A t1 = to_acc(r1[x0]) * lx0 + to_acc(r1[x1]) * lx1;
    dst[o] = from_acc<T>(t0 * ly0 + t1 * ly1);
  }
}

#define RESIZE(NAME, T)                                                                        \
  extern "C" __global__ void NAME(const T* src, T* dst, long long planes, int h, int w, int oh, \
                                  int ow) {                                                    \
    resize_bilinear<T>(src, dst, planes, h, w, oh, ow);                                        \
  }
RESIZE(resize_bilinear_f32, float)
RESIZE(resize_bilinear_f64, double)
RESIZE(resize_bilinear_f16, f16_t)
RESIZE(resize_bilinear_bf16, bf16_t)
