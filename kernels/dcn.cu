// Deformable, modulated im2col for the 3x3 / pad 1 / dilation 1 DCNv2 of YOLACT++: the device
// twin of src/ops/dcn.rs (same sampling rule, same summation order). The GEMM with the weights is
// an ordinary candle matmul (cuBLAS).
//
// x (N, C, H, W), offset (N, 18, Ho, Wo) as interleaved (dy, dx) per tap, mask (N, 9, Ho, Wo)
// already sigmoid-ed -> cols (N, C*9, Ho*Wo), row c*9 + k. All contiguous.
//
// One thread per (image, channel block, tap, output pixel): the bilinear weights are computed once
// and reused for DCN_CB channels; consecutive threads take consecutive pixels so loads of the
// offsets/mask and stores of the columns coalesce.

#define DCN_CB 16

template <typename T>
__device__ void deform_im2col(const T* x, const T* offset, const T* mask, T* cols, int n, int c,
                              int h, int w, int ho, int wo, int stride) {
  typedef typename Opmath<T>::type A;
  const long long p = (long long)ho * wo;
  const int nblk = (c + DCN_CB - 1) / DCN_CB;
  const long long total = (long long)n * nblk * 9 * p;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
       t += (long long)gridDim.x * blockDim.x) {
    const long long pix = t % p;
    long long r = t / p;
    const int k = (int)(r % 9);
    r /= 9;
    const int cb = (int)(r % nblk);
    const int b = (int)(r / nblk);
    const int i = k / 3, j = k % 3;
    const int oy = (int)(pix / wo), ox = (int)(pix % wo);
    const A dy = to_acc(offset[((long long)b * 18 + 2 * k) * p + pix]);
    const A dx = to_acc(offset[((long long)b * 18 + 2 * k + 1) * p + pix]);
    const A m = to_acc(mask[((long long)b * 9 + k) * p + pix]);
    // Integer part first, then the offset, as the reference kernels do.
    const A y = (A)(oy * stride + i - 1) + dy;
    const A xx = (A)(ox * stride + j - 1) + dx;
    int idx[4] = {0, 0, 0, 0};
    A wt[4] = {(A)0, (A)0, (A)0, (A)0};
    bool ok[4] = {false, false, false, false};
    // Written so that NaN coordinates fall through to the zero sample too.
    if (y > (A)-1 && xx > (A)-1 && y < (A)h && xx < (A)w) {
      const int y0 = (int)floor(y), x0 = (int)floor(xx);
      const A ly = y - (A)y0, lx = xx - (A)x0;
      const A hy = (A)1 - ly, hx = (A)1 - lx;
      const int cy[4] = {y0, y0, y0 + 1, y0 + 1};
      const int cx[4] = {x0, x0 + 1, x0, x0 + 1};
      const A cw[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (cy[q] >= 0 && cx[q] >= 0 && cy[q] < h && cx[q] < w) {
          ok[q] = true;
          idx[q] = cy[q] * w + cx[q];
          wt[q] = cw[q];
        }
      }
    }
    const int c_end = min(c, (cb + 1) * DCN_CB);
    for (int ch = cb * DCN_CB; ch < c_end; ++ch) {
      const T* plane = x + ((long long)b * c + ch) * h * w;
      // Out-of-image corners contribute an exact 0 (the reference's zero padding).
      const A v0 = ok[0] ? wt[0] * to_acc(plane[idx[0]]) : (A)0;
      const A v1 = ok[1] ? wt[1] * to_acc(plane[idx[1]]) : (A)0;
      const A v2 = ok[2] ? wt[2] * to_acc(plane[idx[2]]) : (A)0;
      const A v3 = ok[3] ? wt[3] * to_acc(plane[idx[3]]) : (A)0;
      const A v = ((v0 + v1) + v2) + v3;
      cols[(((long long)b * c + ch) * 9 + k) * p + pix] = from_acc<T>(m * v);
    }
  }
}

#define DEFORM(NAME, T)                                                                       \
  extern "C" __global__ void NAME(const T* x, const T* offset, const T* mask, T* cols, int n, \
                                  int c, int h, int w, int ho, int wo, int stride) {          \
    deform_im2col<T>(x, offset, mask, cols, n, c, h, w, ho, wo, stride);                      \
  }
DEFORM(deform_im2col_f32, float)
DEFORM(deform_im2col_f64, double)
DEFORM(deform_im2col_f16, f16_t)
DEFORM(deform_im2col_bf16, bf16_t)

// ---- Backward (training): the device twin of src/ops/dcn_bwd.rs, which states the gradient
// rules (torchvision's). f32 and f64 only.

// Input gradient: the forward's thread layout and sample rule; each corner of each sample adds
// (m * w_q) * g into gx, which the caller zero-fills. The adds are atomic, so the f32 rounding of
// gx depends on the order the threads run in (nondeterministic on a GPU).
template <typename T>
__device__ void deform_col2im(const T* gcol, const T* offset, const T* mask, T* gx, int n, int c,
                              int h, int w, int ho, int wo, int stride) {
  const long long p = (long long)ho * wo;
  const int nblk = (c + DCN_CB - 1) / DCN_CB;
  const long long total = (long long)n * nblk * 9 * p;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
       t += (long long)gridDim.x * blockDim.x) {
    const long long pix = t % p;
    long long r = t / p;
    const int k = (int)(r % 9);
    r /= 9;
    const int cb = (int)(r % nblk);
    const int b = (int)(r / nblk);
    const int i = k / 3, j = k % 3;
    const int oy = (int)(pix / wo), ox = (int)(pix % wo);
    const T dy = offset[((long long)b * 18 + 2 * k) * p + pix];
    const T dx = offset[((long long)b * 18 + 2 * k + 1) * p + pix];
    const T m = mask[((long long)b * 9 + k) * p + pix];
    const T y = (T)(oy * stride + i - 1) + dy;
    const T xx = (T)(ox * stride + j - 1) + dx;
    // Samples outside (-1, H) x (-1, W), NaN included, read nothing and receive nothing.
    if (!(y > (T)-1 && xx > (T)-1 && y < (T)h && xx < (T)w)) continue;
    const int y0 = (int)floor(y), x0 = (int)floor(xx);
    const T ly = y - (T)y0, lx = xx - (T)x0;
    const T hy = (T)1 - ly, hx = (T)1 - lx;
    const int cy[4] = {y0, y0, y0 + 1, y0 + 1};
    const int cx[4] = {x0, x0 + 1, x0, x0 + 1};
    const T cw[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    const int c_end = min(c, (cb + 1) * DCN_CB);
    for (int ch = cb * DCN_CB; ch < c_end; ++ch) {
      const T g = gcol[(((long long)b * c + ch) * 9 + k) * p + pix];
      T* plane = gx + ((long long)b * c + ch) * h * w;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (cy[q] >= 0 && cx[q] >= 0 && cy[q] < h && cx[q] < w) {
          atomicAdd(plane + cy[q] * w + cx[q], m * cw[q] * g);
        }
      }
    }
  }
}

// Offset and mask gradients: one thread per (image, tap, output pixel), summing over the channels
// in order (deterministic). offmask is (N, 27, Ho, Wo) = [offset (18) | mask (9)]; out has the
// same layout with the gradients.
template <typename T>
__device__ void deform_col2im_coord(const T* x, const T* offmask, const T* gcol, T* out, int n,
                                    int c, int h, int w, int ho, int wo, int stride) {
  const long long p = (long long)ho * wo;
  const long long total = (long long)n * 9 * p;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
       t += (long long)gridDim.x * blockDim.x) {
    const long long pix = t % p;
    const long long r = t / p;
    const int k = (int)(r % 9);
    const int b = (int)(r / 9);
    const int i = k / 3, j = k % 3;
    const int oy = (int)(pix / wo), ox = (int)(pix % wo);
    const T* om = offmask + (long long)b * 27 * p;
    const T dy = om[(2 * k) * p + pix];
    const T dx = om[(2 * k + 1) * p + pix];
    const T m = om[(18 + k) * p + pix];
    const T y = (T)(oy * stride + i - 1) + dy;
    const T xx = (T)(ox * stride + j - 1) + dx;
    T gdy = (T)0, gdx = (T)0, gm = (T)0;
    // Outside [-1, H) x [-1, W) every corner is outside: all three gradients are 0 (NaN too).
    if (y >= (T)-1 && xx >= (T)-1 && y < (T)h && xx < (T)w) {
      // The forward's value rule: a sample exactly on -1 reads nothing.
      const bool inside = y > (T)-1 && xx > (T)-1;
      const int y0 = (int)floor(y), x0 = (int)floor(xx);
      const T ly = y - (T)y0, lx = xx - (T)x0;
      const T hy = (T)1 - ly, hx = (T)1 - lx;
      const bool r0 = y0 >= 0, r1 = y0 + 1 < h, c0 = x0 >= 0, c1 = x0 + 1 < w;
      for (int ch = 0; ch < c; ++ch) {
        const T* plane = x + ((long long)b * c + ch) * h * w;
        const T v00 = (r0 && c0) ? plane[y0 * w + x0] : (T)0;
        const T v01 = (r0 && c1) ? plane[y0 * w + x0 + 1] : (T)0;
        const T v10 = (r1 && c0) ? plane[(y0 + 1) * w + x0] : (T)0;
        const T v11 = (r1 && c1) ? plane[(y0 + 1) * w + x0 + 1] : (T)0;
        const T g = gcol[(((long long)b * c + ch) * 9 + k) * p + pix];
        if (inside) {
          const T v = ((hy * hx * v00 + hy * lx * v01) + ly * hx * v10) + ly * lx * v11;
          gm = gm + g * v;
        }
        const T wy = lx * (v11 - v01) + hx * (v10 - v00);
        const T wx = ly * (v11 - v10) + hy * (v01 - v00);
        gdy = gdy + m * wy * g;
        gdx = gdx + m * wx * g;
      }
    }
    T* o = out + (long long)b * 27 * p;
    o[(2 * k) * p + pix] = gdy;
    o[(2 * k + 1) * p + pix] = gdx;
    o[(18 + k) * p + pix] = gm;
  }
}

#define DEFORM_COL2IM(NAME, T)                                                                \
  extern "C" __global__ void NAME(const T* gcol, const T* offset, const T* mask, T* gx, int n, \
                                  int c, int h, int w, int ho, int wo, int stride) {           \
    deform_col2im<T>(gcol, offset, mask, gx, n, c, h, w, ho, wo, stride);                      \
  }
#define DEFORM_COORD(NAME, T)                                                                  \
  extern "C" __global__ void NAME(const T* x, const T* offmask, const T* gcol, T* out, int n,  \
                                  int c, int h, int w, int ho, int wo, int stride) {           \
    deform_col2im_coord<T>(x, offmask, gcol, out, n, c, h, w, ho, wo, stride);                 \
  }
DEFORM_COL2IM(deform_col2im_f32, float)
DEFORM_COL2IM(deform_col2im_f64, double)
DEFORM_COORD(deform_col2im_coord_f32, float)
DEFORM_COORD(deform_col2im_coord_f64, double)
