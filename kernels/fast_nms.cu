// Fast NMS on the device, end to end (docs/model.md §6.2-6.4; host twin: src/post/fast_nms.rs).
//
//   fast_nms_prepare      conf (P, 1+C) -> the candidate priors compacted: their indices, count,
//                         per-class sort keys (C rows of stride P), best-class keys and classes
//   fast_nms_keys         scores (C, n) -> sort keys (C, n)        [the fast_nms_keep_tensor seam]
//   fast_nms_classwise    one block per class: top-k, pairwise IoU, upper-triangular keep
//   fast_nms_merge        one block: global top max_det over the kept entries of all classes
//   fast_nms_cross_class  one block: top-k of the best-class scores, IoU, keep (no global cap)
//
// Compaction: only priors whose best foreground score passes conf_thresh get a slot (in whatever
// order the atomics hand them out), so the top-k passes scan the candidates, typically a few
// hundred to a few thousand, instead of all ~19k priors per class; likewise the classwise blocks
// append their kept entries to one list for the merge. Slots never decide an order: every
// comparison uses the item's own index (`idmap`), so results do not depend on slot order.
//
// Ordering is exactly the host's stable descending sort: a score maps to a monotone u32 key
// (NaN as -inf, -0 as +0, 0 reserved for "not a candidate"), and the key is extended with the
// complement of the index so that every 64-bit composite is unique and ties go to the lower index.
// Top-k is then a 64-bit radix select (8 passes of 8 bits over a shared histogram) followed by a
// rank sort of the k survivors. Compile with --fmad=false so IoU rounds like the host's.

#define NT 256
#define KMAX 1024

__device__ __forceinline__ unsigned score_key(float s) {
  unsigned u = __float_as_uint(s);
  if (s != s) u = 0xff800000u;          // NaN ranks as -inf, like the host's sort key
  if (u == 0x80000000u) u = 0u;         // -0 == +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned long long composite(unsigned key, int idx) {
  return ((unsigned long long)key << 32) | (unsigned long long)(~(unsigned)idx);
}

// Slots of the min(k, #valid) largest composites among keys[0..n) (key 0 = absent), written in
// descending order to `sorted`; returns their count. Slot i ranks as item idmap[i] (or i when idmap
// is null). k <= KMAX. Called by all NT threads.
__device__ int block_top_k(const unsigned* keys, const int* idmap, int n, int k, int* sorted,
                           int* sel, unsigned long long* selc) {
  __shared__ unsigned hist[256];
  __shared__ unsigned long long s_prefix, s_mask;
  __shared__ unsigned s_remaining, s_total;
  __shared__ int s_count;
  const int tid = threadIdx.x;
  if (k <= 0) return 0;
  if (tid == 0) {
    s_prefix = 0ull;
    s_mask = 0ull;
    s_remaining = (unsigned)k;
    s_count = 0;
    s_total = 0;
  }
  bool take_all = false;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += NT) hist[b] = 0u;
    __syncthreads();
    const unsigned long long prefix = s_prefix, mask = s_mask;
    for (int i = tid; i < n; i += NT) {
      const unsigned key = keys[i];
      if (key == 0u) continue;
      const unsigned long long cv = composite(key, idmap ? idmap[i] : i);
      if ((cv & mask) == prefix) atomicAdd(&hist[(unsigned)(cv >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      if (shift == 56) {
        unsigned t = 0;
        for (int b = 0; b < 256; ++b) t += hist[b];
        s_total = t;
      }
      const unsigned rem = s_remaining;
      unsigned above = 0;
      int bin = 0;
      for (int b = 255; b >= 0; --b) {
        if (above + hist[b] >= rem) {
          bin = b;
          break;
        }
        above += hist[b];
      }
      s_remaining = rem - above;
      s_prefix = prefix | ((unsigned long long)bin << shift);
      s_mask = mask | (0xffull << shift);
    }
    __syncthreads();
    if (s_total <= (unsigned)k) {
      take_all = true;
      break;
    }
  }
  // Composites are unique, so after 8 passes s_prefix is exactly the k-th largest.
  const unsigned long long thr = s_prefix;
  for (int i = tid; i < n; i += NT) {
    const unsigned key = keys[i];
    if (key == 0u) continue;
    const unsigned long long cv = composite(key, idmap ? idmap[i] : i);
    if (take_all || cv >= thr) {
      const int pos = atomicAdd(&s_count, 1);
      sel[pos] = i;
      selc[pos] = cv;
    }
  }
  __syncthreads();
  const int m = s_count;
  for (int e = tid; e < m; e += NT) {
    int rank = 0;
    for (int f = 0; f < m; ++f) rank += selc[f] > selc[e];
    sorted[rank] = sel[e];
  }
  __syncthreads();
  return m;
}

// The host's `iou`: no +1, f32, two empty boxes give NaN.
__device__ __forceinline__ float box_iou(const float* a, const float* b) {
  const float iw = fmaxf(fminf(a[2], b[2]) - fmaxf(a[0], b[0]), 0.0f);
  const float ih = fmaxf(fminf(a[3], b[3]) - fmaxf(a[1], b[1]), 0.0f);
  const float inter = iw * ih;
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  return inter / (area_a + area_b - inter);
}

// Loads the boxes of the m ranked slots (box idmap[slot], or slot without a map) and marks, per rank j, whether no higher-ranked box
// (suppressed or not) overlaps it by more than iou_thresh. A NaN IoU suppresses.
__device__ void ranked_keep(const float* boxes, const int* idmap, const int* sorted, int m,
                            float iou_thresh, float* bx, unsigned char* keep) {
  for (int e = threadIdx.x; e < m * 4; e += NT) {
    const int slot = sorted[e / 4];
    bx[e] = boxes[(long long)(idmap ? idmap[slot] : slot) * 4 + e % 4];
  }
  __syncthreads();
  for (int j = threadIdx.x; j < m; j += NT) {
    bool ok = true;
    for (int i = 0; i < j && ok; ++i) ok = box_iou(bx + 4 * i, bx + 4 * j) <= iou_thresh;
    keep[j] = ok ? 1 : 0;
  }
  __syncthreads();
}

// Grid-stride over the priors (any grid covers all p of them; the plans cap grids at 2^20
// blocks). A candidate prior (best foreground score strictly above conf_thresh) takes
// slot = atomicAdd(count): cand_idx[slot] = prior, keys[c * p + slot] = its class-c score's key,
// best_key/best_cls[slot] = its best class (first on ties) for cross-class NMS. count must be
// zero before the launch. out[1] |= 1 when a score is NaN (the host rejects those frames).
extern "C" __global__ void fast_nms_prepare(const float* conf, int p, int c1, float conf_thresh,
                                            unsigned* keys, unsigned* best_key, int* best_cls,
                                            int* cand_idx, int* count, int* out) {
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < p;
       t += (long long)gridDim.x * blockDim.x) {
    const int i = (int)t;
    const float* row = conf + (long long)i * c1;
    float best = -__int_as_float(0x7f800000);
    int cls = 0;
    bool nan = row[0] != row[0];  // the host rejects a NaN anywhere, background included
    for (int c = 1; c < c1; ++c) {
      const float s = row[c];
      if (s != s) nan = true;
      if (s > best) {
        best = s;
        cls = c - 1;
      }
    }
    if (nan) atomicOr(out + 1, 1);
    if (!(best > conf_thresh)) continue;
    const int slot = atomicAdd(count, 1);
    cand_idx[slot] = i;
    for (int c = 1; c < c1; ++c) keys[(long long)(c - 1) * p + slot] = score_key(row[c]);
    best_key[slot] = score_key(best);
    best_cls[slot] = cls;
  }
}

// scores (len) -> keys, every entry a candidate.
extern "C" __global__ void fast_nms_keys(const float* scores, long long len, unsigned* keys) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
       i += (long long)gridDim.x * blockDim.x)
    keys[i] = score_key(scores[i]);
}

// Grid: one block of NT threads per class. Class c's keys are keys[c * kstride + slot] for the
// first n slots, n = *n_dev when n_dev is set (the compacted count, read on the device) else n.
// Slot i is item idmap[i] (or i); the score of (class c, item t) is scores[c * sc + t * si] and
// its box boxes[t]. Writes, per class, the kept items in rank order to kept_idx / kept_score /
// kept_key (C, top_k; key 0 marks an empty slot) and kept_count (C).
extern "C" __global__ void fast_nms_classwise(const unsigned* keys, long long kstride,
                                              const int* n_dev, int n, const int* idmap,
                                              const float* scores, long long sc, long long si,
                                              const float* boxes, int top_k, float iou_thresh,
                                              int* kept_idx, float* kept_score,
                                              unsigned* kept_key, int* kept_count,
                                              unsigned* m_key, int* m_id, int* m_count) {
  __shared__ int sorted[KMAX];
  __shared__ int sel[KMAX];
  __shared__ unsigned long long selc[KMAX];
  __shared__ float bx[KMAX * 4];
  __shared__ unsigned char keep[KMAX];
  const int c = blockIdx.x;
  const int items = n_dev ? *n_dev : n;
  const unsigned* row = keys + (long long)c * kstride;
  const long long base = (long long)c * top_k;
  for (int r = threadIdx.x; r < top_k; r += NT) kept_key[base + r] = 0u;
  const int m = block_top_k(row, idmap, items, top_k, sorted, sel, selc);
  ranked_keep(boxes, idmap, sorted, m, iou_thresh, bx, keep);
  if (threadIdx.x == 0) {
    int r = 0;
    for (int j = 0; j < m; ++j) {
      if (!keep[j]) continue;
      const int slot = sorted[j];
      const int t = idmap ? idmap[slot] : slot;
      kept_idx[base + r] = t;
      kept_score[base + r] = scores[c * sc + t * si];
      kept_key[base + r] = row[slot];
      ++r;
    }
    kept_count[c] = r;
    if (m_key) {
      // Append this class's list to the merge input; m_id is the flattened (class, rank) index,
      // which orders ties as the host's stable sort does, whatever offset the atomic gave.
      const int off = atomicAdd(m_count, r);
      for (int q = 0; q < r; ++q) {
        m_key[off + q] = kept_key[base + q];
        m_id[off + q] = (int)(base + q);
      }
    }
  }
}

// One block. The global top max_det of the per-class lists, class-major order breaking ties (the
// host's stable sort of the flattened lists), over the *m_count kept entries the classwise blocks
// appended (m_key, m_id = class * top_k + rank) rather than all C * top_k slots.
// out = [count, nan flag, idx[M], cls[M], score[M]] with M = max_det and scores as f32 bit patterns.
extern "C" __global__ void fast_nms_merge(const unsigned* m_key, const int* m_id,
                                          const int* m_count, const int* kept_idx,
                                          const float* kept_score, int top_k, int max_det,
                                          int* out) {
  __shared__ int sorted[KMAX];
  __shared__ int sel[KMAX];
  __shared__ unsigned long long selc[KMAX];
  const int m = block_top_k(m_key, m_id, *m_count, max_det, sorted, sel, selc);
  for (int e = threadIdx.x; e < m; e += NT) {
    const int id = m_id[sorted[e]];
    out[2 + e] = kept_idx[id];
    out[2 + max_det + e] = id / top_k;
    out[2 + 2 * max_det + e] = __float_as_int(kept_score[id]);
  }
  if (threadIdx.x == 0) out[0] = m;
}

// One block. Cross-class Fast NMS over the best-class keys of the *n_dev compacted candidates
// (slot i is prior cand_idx[i]); out as in fast_nms_merge with M = top_k.
extern "C" __global__ void fast_nms_cross_class(const unsigned* best_key, const int* best_cls,
                                                const int* cand_idx, const int* n_dev,
                                                const float* conf, int c1, const float* boxes,
                                                int top_k, float iou_thresh, int* out) {
  __shared__ int sorted[KMAX];
  __shared__ int sel[KMAX];
  __shared__ unsigned long long selc[KMAX];
  __shared__ float bx[KMAX * 4];
  __shared__ unsigned char keep[KMAX];
  const int m = block_top_k(best_key, cand_idx, *n_dev, top_k, sorted, sel, selc);
  ranked_keep(boxes, cand_idx, sorted, m, iou_thresh, bx, keep);
  if (threadIdx.x == 0) {
    int r = 0;
    for (int j = 0; j < m; ++j) {
      if (!keep[j]) continue;
      const int slot = sorted[j];
      const int i = cand_idx[slot];
      const int cls = best_cls[slot];
      out[2 + r] = i;
      out[2 + top_k + r] = cls;
      out[2 + 2 * top_k + r] = __float_as_int(conf[(long long)i * c1 + 1 + cls]);
      ++r;
    }
    out[0] = r;
  }
}
