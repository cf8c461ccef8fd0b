// Host emulation of the CUDA C subset used by kernels/*.cu, for tests/it/cuda_emu.rs.
//
// Each block runs on one OS thread with one cooperative fiber (ucontext) per CUDA thread:
// __syncthreads() parks the fiber until every fiber of the block has reached the barrier, so
// shared memory, barriers and atomics behave as on a GPU with any interleaving that respects the
// barriers. Blocks run one after the other. __shared__ becomes a function-local static (blocks
// never overlap, and emu_launch serialises launches across test threads).
//
// Deliberately not emulated: warp-synchronous code (our kernels have none) and PTX; the prelude's
// f16 conversions use the host versions below (IEEE round-to-nearest-even, like cvt.rn).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

struct emu_dim3 {
  unsigned x, y, z;
};
extern emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

void __syncthreads();

static inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
static inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline int __float_as_int(float f) { return (int)__float_as_uint(f); }
static inline float __int_as_float(int i) { return __uint_as_float((unsigned)i); }

// Fibers switch only at barriers, so plain read-modify-writes are atomic here.
static inline unsigned atomicAdd(unsigned* p, unsigned v) {
  unsigned o = *p;
  *p = o + v;
  return o;
}
static inline int atomicAdd(int* p, int v) {
  int o = *p;
  *p = o + v;
  return o;
}
static inline float atomicAdd(float* p, float v) {
  float o = *p;
  *p = o + v;
  return o;
}
static inline double atomicAdd(double* p, double v) {
  double o = *p;
  *p = o + v;
  return o;
}
static inline int atomicOr(int* p, int v) {
  int o = *p;
  *p = o | v;
  return o;
}
static inline unsigned atomicOr(unsigned* p, unsigned v) {
  unsigned o = *p;
  *p = o | v;
  return o;
}
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }

static inline float emu_half_to_float(unsigned short h) {
  const unsigned sign = (unsigned)(h & 0x8000u) << 16;
  unsigned exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    bits = sign | ((unsigned)(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  return __uint_as_float(bits);
}

static inline unsigned short emu_float_to_half(float f) {
  const unsigned u = __float_as_uint(f);
  const unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
  const unsigned a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to inf
  if (a < 0x38800000u) {  // f16 subnormal or zero: round a * 2^24 to an integer, ties to even
    if (a < 0x33000000u) return sign;  // below half the smallest subnormal
    const unsigned e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    const unsigned shift = 126u - e;  // value = m * 2^(e-150); want m * 2^(e-150+24)
    unsigned q = m >> shift;
    const unsigned rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return (unsigned short)(sign | q);
  }
  unsigned v = a - 0x38000000u;  // rebias exponent 127 -> 15 (in the top bits after >> 13)
  const unsigned rem = v & 0x1fffu;
  v >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) ++v;
  return (unsigned short)(sign | v);
}
