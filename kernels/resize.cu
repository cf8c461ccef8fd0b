// Bilinear resize with PyTorch's align_corners=False rule; the device twin of
// src/ops/interp.rs (same formula, same rounding order; compile with --fmad=false for bitwise
// agreement with the CPU op).

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

// The same resize of f32 planes, thresholded: dst = (value > thresh) as 0/1 bytes. The device twin
// of src/ops/interp.rs's resize_threshold_planes (mask upsampling to the image, eval.py --image).
extern "C" __global__ void resize_threshold_u8(const float* src, unsigned char* dst,
                                               long long planes, int h, int w, int oh, int ow,
                                               float thresh) {
  const long long total = planes * oh * ow;
  const float sy = (float)h / (float)oh;
  const float sx = (float)w / (float)ow;
  for (long long o = blockIdx.x * (long long)blockDim.x + threadIdx.x; o < total;
       o += (long long)gridDim.x * blockDim.x) {
    const int ox = (int)(o % ow);
    const int oy = (int)((o / ow) % oh);
    const long long p = o / ((long long)ow * oh);
    int y0, y1, x0, x1;
    float ly0, ly1, lx0, lx1;
    axis_tap<float>(oy, h, sy, &y0, &y1, &ly0, &ly1);
    axis_tap<float>(ox, w, sx, &x0, &x1, &lx0, &lx1);
    const float* r0 = src + p * h * w + (long long)y0 * w;
    const float* r1 = src + p * h * w + (long long)y1 * w;
    const float t0 = r0[x0] * lx0 + r0[x1] * lx1;
    const float t1 = r1[x0] * lx0 + r1[x1] * lx1;
    dst[o] = (t0 * ly0 + t1 * ly1) > thresh ? 1 : 0;
  }
}
