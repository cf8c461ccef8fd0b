// The block scheduler of the kernel emulator (see emu.hpp): one cooperative fiber per thread,
// a round-robin that runs every fiber of a block up to its next __syncthreads() (or its end),
// then releases the barrier. One launch at a time per process.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "emu.hpp"
#include "emu_launch.hpp"

emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

extern "C" const EmuReg emu_registry[];

namespace {
enum State { RUNNABLE, AT_BARRIER, DONE };
struct Fiber {
  ucontext_t ctx;
  State st;
};

const size_t kStack = 256 * 1024;
ucontext_t g_sched;
std::vector<Fiber> g_fib;
std::vector<std::unique_ptr<char[]>> g_stacks;
unsigned g_cur = 0;
void (*g_invoke)(void**) = nullptr;
void** g_args = nullptr;
std::mutex g_mu;
// Execution order: identity when g_seed is 0, else a fresh pseudo-random permutation per block
// (blocks) and per barrier round (threads), so results that depend on scheduling show up.
unsigned long long g_seed = 0;
std::vector<unsigned> g_order;

unsigned long long next_rand() {
  g_seed ^= g_seed << 13;
  g_seed ^= g_seed >> 7;
  g_seed ^= g_seed << 17;
  return g_seed;
}

void fill_order(std::vector<unsigned>& v, unsigned n) {
  v.resize(n);
  for (unsigned i = 0; i < n; ++i) v[i] = i;
  if (g_seed == 0) return;
  for (unsigned i = n; i > 1; --i) std::swap(v[i - 1], v[next_rand() % i]);
}

// Set while threads run as plain calls (the fast path for blocks whose first thread never
// reached a barrier); a barrier reached then is a divergent one.
bool g_direct = false;
unsigned g_direct_barriers = 0;

void fiber_main() {
  g_invoke(g_args);
  g_fib[g_cur].st = DONE;  // returning resumes g_sched through uc_link
}

void start_fiber(unsigned t) {
  Fiber& f = g_fib[t];
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = g_stacks[t].get();
  f.ctx.uc_stack.ss_size = kStack;
  f.ctx.uc_link = &g_sched;
  makecontext(&f.ctx, fiber_main, 0);
  f.st = RUNNABLE;
}

void resume(unsigned t) {
  threadIdx = {t, 0, 0};
  g_cur = t;
  swapcontext(&g_sched, &g_fib[t].ctx);
}

// Runs one block; returns false (with err) when threads left the kernel while others waited at
// a barrier, which is undefined behaviour on a GPU.
bool run_block(unsigned nthreads, char* err, size_t errlen) {
  // One thread first, on a fiber. If it finishes without reaching a barrier, the kernel has none
  // on this path and the other threads run as plain calls (much faster); a barrier reached by
  // one of them then is a divergent one.
  fill_order(g_order, nthreads);
  const unsigned first = g_order[0];
  start_fiber(first);
  resume(first);
  if (g_fib[first].st == DONE) {
    g_direct = true;
    g_direct_barriers = 0;
    for (unsigned k = 1; k < nthreads; ++k) {
      threadIdx = {g_order[k], 0, 0};
      g_invoke(g_args);
    }
    g_direct = false;
    if (g_direct_barriers) {
      snprintf(err, errlen,
               "block %u: thread %u returned without a barrier but other threads reached "
               "__syncthreads() %u times",
               blockIdx.x, first, g_direct_barriers);
      return false;
    }
    return true;
  }
  // The first thread waits at its first barrier; the others start and run up to theirs.
  for (unsigned t = 0; t < nthreads; ++t)
    if (t != first) start_fiber(t);
  for (unsigned barrier = 1;; ++barrier) {
    fill_order(g_order, nthreads);
    for (unsigned k = 0; k < nthreads; ++k)
      if (g_fib[g_order[k]].st == RUNNABLE) resume(g_order[k]);
    unsigned waiting = 0, done = 0;
    for (unsigned t = 0; t < nthreads; ++t) {
      if (g_fib[t].st == AT_BARRIER) ++waiting;
      if (g_fib[t].st == DONE) ++done;
    }
    if (waiting == 0) return true;
    if (done > 0) {
      snprintf(err, errlen,
               "block %u, barrier %u: %u threads returned while %u waited at __syncthreads()",
               blockIdx.x, barrier, done, waiting);
      // Let the waiting threads finish so no fiber is left suspended.
      for (unsigned t = 0; t < nthreads; ++t)
        while (g_fib[t].st == AT_BARRIER) {
          g_fib[t].st = RUNNABLE;
          resume(t);
        }
      return false;
    }
    for (unsigned t = 0; t < nthreads; ++t) g_fib[t].st = RUNNABLE;
  }
}
}  // namespace

void __syncthreads() {
  if (g_direct) {
    ++g_direct_barriers;
    return;
  }
  Fiber& f = g_fib[g_cur];
  f.st = AT_BARRIER;
  swapcontext(&f.ctx, &g_sched);
}

// Launches `entry` with `grid` x `block` threads. `kinds` names the C kind of each of the nargs
// arguments ('p', 'i', 'l', 'f', 'd'); `args[i]` points at its value. A non-zero `seed` shuffles
// the order of blocks and of threads between barriers. Returns 0, or non-zero with a message in
// err.
extern "C" int emu_launch(const char* entry, unsigned grid, unsigned block, int nargs,
                          const char* kinds, void** args, unsigned long long seed, char* err,
                          size_t errlen) {
  std::lock_guard<std::mutex> lock(g_mu);
  const EmuReg* reg = nullptr;
  for (const EmuReg* r = emu_registry; r->name; ++r)
    if (strcmp(r->name, entry) == 0) reg = r;
  if (!reg) {
    snprintf(err, errlen, "no kernel named %s in this module", entry);
    return 1;
  }
  const char* want = reg->kinds();
  if ((int)strlen(want) != nargs || strncmp(want, kinds, (size_t)nargs) != 0) {
    snprintf(err, errlen, "%s takes (%s) but the launch passed (%.*s)", entry, want, nargs, kinds);
    return 2;
  }
  if (grid == 0 || block == 0 || block > 1024) {
    snprintf(err, errlen, "%s: invalid launch %u x %u", entry, grid, block);
    return 3;
  }
  while (g_fib.size() < block) {
    g_fib.emplace_back();
    g_stacks.emplace_back(new char[kStack]);
  }
  g_invoke = reg->invoke;
  g_args = args;
  gridDim = {grid, 1, 1};
  blockDim = {block, 1, 1};
  g_seed = seed;
  std::vector<unsigned> blocks;
  fill_order(blocks, grid);
  for (unsigned b : blocks) {
    blockIdx = {b, 0, 0};
    if (!run_block(block, err, errlen)) return 4;
  }
  return 0;
}
