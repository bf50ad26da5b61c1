// Fused multi-step IF/LIF/DLIF neuron: the whole T-step recursion (forward) and the reverse-time
// surrogate backward as one call each, parallel over neurons (at::parallel_for = OpenMP).
//
// Layout: every tensor is [T, N] row-major (N neurons of a layer, time-major), except the input
// current, which may be broadcast over time (time stride 0: direct encoding's first layer).
// The arithmetic repeats robustsnn.neurons._forward_loop / _MultiStepSpike.backward operation by
// operation (same roundings: built with -ffp-contract=off; the membrane update is an explicit
// fused multiply-add when torch's vectorised add(alpha=) is one), so spikes are bit-identical.
// Sums (threshold and gain gradients) are accumulated in double per chunk of neurons and reduced
// in chunk order: the result does not depend on the number of threads.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kChunk = 1024;  // neurons per work item (state buffer on the stack)

// GIVEN: the derivative of every element is passed in (a spike hook's, gradhooks.py)
enum Surrogate { TRIANGLE = 0, EXP = 1, RECTANGLE = 2, STE = 3, SIGMOID = 4, ATAN = 5, PDSG = 6, GIVEN = 7 };

template <typename T>
struct SurrogateConsts {
  T g, g2, a, a_over_g, half_a, pi_half_a, half_g, pdsg_norm, neg_g;
  SurrogateConsts(double width, double alpha) {
    // Constants rounded as torch rounds the Python floats of surrogates.surrogate_grad.
    g = static_cast<T>(width);
    g2 = static_cast<T>(width * width);
    a = static_cast<T>(alpha);
    a_over_g = static_cast<T>(alpha / width);
    half_a = static_cast<T>(alpha / 2);
    pi_half_a = static_cast<T>(M_PI / 2 * alpha);
    half_g = static_cast<T>(width / 2);
    pdsg_norm = static_cast<T>(width * std::sqrt(2 * M_PI));
    neg_g = static_cast<T>(-width);
  }
};

// dH/du of the surrogate kSg at u (surrogates.surrogate_grad, operation by operation).
template <int kSg, typename T>
inline T surrogate(T u, const SurrogateConsts<T>& c) {
  if constexpr (kSg == TRIANGLE) {
    const T r = c.g - std::abs(u);
    return (r > T(0) ? r : T(0)) / c.g2;
  } else if constexpr (kSg == EXP) {
    return c.a * std::exp(c.neg_g * std::abs(u));
  } else if constexpr (kSg == RECTANGLE) {
    return (std::abs(u) < c.half_g ? T(1) : T(0)) / c.g;
  } else if constexpr (kSg == STE) {
    return T(1);
  } else if constexpr (kSg == SIGMOID) {
    const T s = T(1) / (T(1) + std::exp(-((c.a * u) / c.g)));
    return c.a_over_g * s * (T(1) - s);
  } else if constexpr (kSg == ATAN) {
    const T z = (c.pi_half_a * u) / c.g;
    return c.half_a / (T(1) + z * z) / c.g;
  } else {  // PDSG
    const T z = u / c.g;
    return std::exp(T(-0.5) * (z * z)) / c.pdsg_norm;
  }
}

// One time step for n neurons; branch-free in the inner loop so that it vectorises.
template <typename T, bool kFused, bool kGain, bool kSoft, bool kMem, bool kFirstNoInit>
inline void step(const T* __restrict it, T gt, T th, T lam, T v0, bool first, T* __restrict v, T* __restrict st,
                 T* __restrict mt, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T i = kGain ? it[j] * gt : it[j];
    T m;
    if (kFirstNoInit) {
      m = i;
    } else {
      const T vp = first ? v0 : v[j];
      m = kFused ? std::fma(vp, lam, i) : i + vp * lam;
    }
    const bool s = m >= th;
    st[j] = s ? T(1) : T(0);
    if (kMem) mt[j] = m;
    v[j] = s ? (kSoft ? m - th : T(0)) : m;
  }
}

// The T steps of the n neurons [b, b + n): spikes of step t go to spikes_at(t) (n values), then
// after(t) runs (the fused pooling reads them there); v holds the state (n values). With kMem the
// membrane of step t goes to mem + t * mstride (mem: the block's first value).
template <typename T, bool kFused, bool kGain, bool kSoft, bool kMem, typename SpikesAt, typename After>
inline void forward_block(const T* cur, int64_t tstride, int64_t Tn, int64_t b, int64_t n, T th,
                          const T* gain, T lam, bool has_init, T v0, T* mem, int64_t mstride, T* v,
                          SpikesAt spikes_at, After after) {
  for (int64_t t = 0; t < Tn; ++t) {
    const T* it = cur + t * tstride + b;
    T* st = spikes_at(t);
    T* mt = kMem ? mem + t * mstride : nullptr;
    const T gt = kGain ? gain[t] : T(1);
    if (t == 0 && !has_init) {
      step<T, kFused, kGain, kSoft, kMem, true>(it, gt, th, lam, v0, true, v, st, mt, n);
    } else if (t == 0) {
      step<T, kFused, kGain, kSoft, kMem, false>(it, gt, th, lam, v0, true, v, st, mt, n);
    } else {
      step<T, kFused, kGain, kSoft, kMem, false>(it, gt, th, lam, v0, false, v, st, mt, n);
    }
    after(t);
  }
}

// 2x2 / stride-2 average of one pair of rows: top = in[0, L), bottom = in[L, 2L), a row being
// W positions of C values (C = 1: an NCHW row; C channels: a channels-last row); w = W / 2
// outputs of C values each, in avg_pool2d's order ((x00 + x01) + x10) + x11, then / 4.
template <typename T>
inline void pool_rows(const T* __restrict in, int64_t L, int64_t w, int64_t C, T* __restrict out) {
  const T* bot = in + L;
  for (int64_t j = 0; j < w; ++j) {
    const T* a = in + 2 * j * C;
    const T* b = bot + 2 * j * C;
    T* d = out + j * C;
    for (int64_t c = 0; c < C; ++c) d[c] = (((a[c] + a[C + c]) + b[c]) + b[C + c]) / T(4);
  }
}

// Backward of pool_rows: each of the w*C pooled gradients / 4 to its four inputs in the pair of
// rows out[0, L), out[L, 2L); positions beyond 2w (odd W) get 0.
template <typename T>
inline void unpool_rows(const T* __restrict src, int64_t L, int64_t w, int64_t C, T* __restrict out) {
  T* bot = out + L;
  for (int64_t j = 0; j < w; ++j) {
    for (int64_t c = 0; c < C; ++c) {
      const T v = src[j * C + c] / T(4);
      out[2 * j * C + c] = v;
      out[(2 * j + 1) * C + c] = v;
      bot[2 * j * C + c] = v;
      bot[(2 * j + 1) * C + c] = v;
    }
  }
  for (int64_t k = 2 * w * C; k < L; ++k) out[k] = bot[k] = T(0);
}

template <typename T, bool kFused, bool kGain, bool kSoft, bool kMem>
void forward_chunks(const T* cur, int64_t tstride, int64_t Tn, int64_t N, T th, const T* gain, T lam,
                    bool has_init, T v0, T* spikes, T* membrane) {
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    alignas(64) T v[kChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kChunk, n = std::min(kChunk, N - b);
      forward_block<T, kFused, kGain, kSoft, kMem>(cur, tstride, Tn, b, n, th, gain, lam, has_init, v0,
                                                   kMem ? membrane + b : nullptr, N, v,
                                                   [&](int64_t t) { return spikes + t * N + b; }, [](int64_t) {});
    }
  });
}

// The neuron followed by 2x2 average pooling: the N neurons are P pairs of rows of length L
// (W positions x C values, W even); the pooled spikes [T, P * (W / 2) * C] are written, the
// spikes themselves only to a per-thread buffer.
template <typename T, bool kFused, bool kGain, bool kSoft, bool kMem>
void forward_pool_chunks(const T* cur, int64_t tstride, int64_t Tn, int64_t N, T th, const T* gain, T lam,
                         bool has_init, T v0, int64_t L, int64_t C, T* pooled, T* membrane) {
  const int64_t P = N / (2 * L), w = L / (2 * C), Np = P * w * C;
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    std::vector<T> v(2 * L), s(2 * L);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p * 2 * L;
      forward_block<T, kFused, kGain, kSoft, kMem>(
          cur, tstride, Tn, b, 2 * L, th, gain, lam, has_init, v0, kMem ? membrane + b : nullptr, N, v.data(),
          [&](int64_t) { return s.data(); },
          [&](int64_t t) { pool_rows<T>(s.data(), L, w, C, pooled + t * Np + p * w * C); });
    }
  });
}

// pool_L > 0: forward_pool_chunks with rows of pool_L values of pool_C channels, into `spikes`
// (then the pooled spikes).
template <typename T>
void forward_impl(bool fused, const T* cur, int64_t tstride, int64_t Tn, int64_t N, T th, const T* gain, T lam,
                  bool soft, bool has_init, T v0, T* spikes, T* membrane, int64_t pool_L = 0, int64_t pool_C = 1) {
  // 16 specialisations: fused x gain x soft x keep-membrane
#define RSNN_FWD(F, G, S, M) \
  if (fused == F && (gain != nullptr) == G && soft == S && (membrane != nullptr) == M) { \
    if (pool_L > 0) \
      return forward_pool_chunks<T, F, G, S, M>(cur, tstride, Tn, N, th, gain, lam, has_init, v0, pool_L, pool_C, \
                                                spikes, membrane); \
    return forward_chunks<T, F, G, S, M>(cur, tstride, Tn, N, th, gain, lam, has_init, v0, spikes, membrane); \
  }
#define RSNN_FWD_M(F, G, S) RSNN_FWD(F, G, S, true) RSNN_FWD(F, G, S, false)
#define RSNN_FWD_S(F, G) RSNN_FWD_M(F, G, true) RSNN_FWD_M(F, G, false)
#define RSNN_FWD_G(F) RSNN_FWD_S(F, true) RSNN_FWD_S(F, false)
  RSNN_FWD_G(true)
  RSNN_FWD_G(false)
#undef RSNN_FWD_G
#undef RSNN_FWD_S
#undef RSNN_FWD_M
#undef RSNN_FWD
}

// Sum of x[0..n) in double, 8 independent lanes (vectorisable without reassociating a lane).
template <typename T>
inline double lane_sum(const T* __restrict x, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(x[j + k]);
  double tot = 0.0;
  for (; j < n; ++j) tot += static_cast<double>(x[j]);
  for (int k = 0; k < 8; ++k) tot += acc[k];
  return tot;
}

template <typename T>
inline double lane_dot(const T* __restrict x, const T* __restrict y, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(x[j + k] * y[j + k]);
  double tot = 0.0;
  for (; j < n; ++j) tot += static_cast<double>(x[j] * y[j]);
  for (int k = 0; k < 8; ++k) tot += acc[k];
  return tot;
}

// One reverse-time step for n neurons: dL/dm[t] into gm, the threshold terms into thc,
// dL/dv[t-1] = lam * dL/dm[t] into gv (_MultiStepSpike.backward, operation by operation).
template <typename T, int kSg, bool kSoft, bool kDetach, bool kLast>
inline void bstep(const T* __restrict g_t, const T* __restrict m_t, const T* __restrict sg_t, T th, T lam,
                  const SurrogateConsts<T>& c, T* __restrict gv, T* __restrict gm, T* __restrict thc, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T m = m_t[j];
    const T u = m - th;
    T d;
    if constexpr (kSg == GIVEN) d = sg_t[j];
    else d = surrogate<kSg, T>(u, c);
    T g_s, g_m, extra = T(0);
    if (kLast) {
      g_s = g_t[j];
      g_m = T(0);
    } else {
      const T gvp = gv[j];
      const bool s = u >= T(0);
      g_s = kDetach ? g_t[j] : g_t[j] - gvp * (kSoft ? th : m);
      g_m = kSoft ? gvp : (s ? T(0) : gvp);
      if (kSoft) extra = s ? gvp : T(0);
    }
    const T g_s_sg = g_s * d;
    g_m = kLast ? g_s_sg : g_m + g_s_sg;
    thc[j] = kSoft ? extra + g_s_sg : g_s_sg;
    gm[j] = g_m;
    gv[j] = g_m * lam;
  }
}

// The reverse-time recursion of the n neurons [b, b + n); grad_at(t) gives their n upstream
// gradients of step t, mem + t * mstride their membrane at step t. gv, gm_buf, thc: n values of scratch. Writes the threshold sum into
// *th_out, dL/dv[-1]'s sum into *gv_out and, with cur, the gain terms into gain_out[0..Tn).
template <typename T, int kSg, bool kSoft, bool kDetach, typename GradAt>
inline void backward_block(GradAt grad_at, const T* mem, int64_t mstride, const T* sg, int64_t Tn, int64_t N,
                           int64_t b, int64_t n,
                           T th, const T* gain, const T* cur, int64_t tstride, T lam, const SurrogateConsts<T>& sc,
                           T* gi, bool sum_time, bool want_th, T* gv, T* gm_buf, T* thc, double* th_out,
                           double* gain_out, double* gv_out) {
  T* gsum = (gi && sum_time) ? gi + b : nullptr;
  double th_acc = 0.0;
  for (int64_t t = Tn - 1; t >= 0; --t) {
    const T* g_t = grad_at(t);
    const T* m_t = mem + t * mstride;
    const T* sg_t = sg ? sg + t * N + b : nullptr;
    // without a gain, dL/dI[t] = dL/dm[t]: write it straight into the output
    T* gm = (gi && !gain && !sum_time) ? gi + t * N + b : gm_buf;
    if (t == Tn - 1)
      bstep<T, kSg, kSoft, kDetach, true>(g_t, m_t, sg_t, th, lam, sc, gv, gm, thc, n);
    else
      bstep<T, kSg, kSoft, kDetach, false>(g_t, m_t, sg_t, th, lam, sc, gv, gm, thc, n);
    if (want_th) th_acc -= lane_sum(thc, n);
    if (gi && sum_time) {
      // one current repeated at every step: its gradient is the sum over t, kept per step in
      // gsum (reverse time) and written once, [N] instead of [T, N]
      if (gain) {
        const T gt = gain[t];
        if (t == Tn - 1) for (int64_t j = 0; j < n; ++j) gsum[j] = gm[j] * gt;
        else for (int64_t j = 0; j < n; ++j) gsum[j] += gm[j] * gt;
      } else {
        if (t == Tn - 1) for (int64_t j = 0; j < n; ++j) gsum[j] = gm[j];
        else for (int64_t j = 0; j < n; ++j) gsum[j] += gm[j];
      }
    } else if (gi && gain) {
      T* gi_t = gi + t * N + b;
      const T gt = gain[t];
      for (int64_t j = 0; j < n; ++j) gi_t[j] = gm[j] * gt;
    }
    if (cur) gain_out[t] = lane_dot(gm, cur + t * tstride + b, n);
  }
  *th_out = th_acc;
  *gv_out = lane_sum(gv, n);
}

// What the forward was given, for a backward that recomputes the membrane instead of reading a
// saved one: cur (as forward_any's current, time stride tstride), gain or null, and the settings.
template <typename T>
struct Recompute {
  const T* cur;
  int64_t tstride;
  const T* gain;
  T lam, v0;
  bool fused, has_init;
};

// The membrane [Tn, n] (row stride n) of the neurons [b, b + n), recomputed by forward_block into
// mem (v, s: n values of scratch): the same operations as the forward, so the same bits.
template <typename T, bool kSoft>
inline void recompute_block(const Recompute<T>& rc, int64_t Tn, int64_t b, int64_t n, T th, T* mem, T* v, T* s) {
  auto spikes_at = [&](int64_t) { return s; };
  auto nothing = [](int64_t) {};
#define RSNN_RC(F, G) \
  if (rc.fused == F && (rc.gain != nullptr) == G) \
    return forward_block<T, F, G, kSoft, true>(rc.cur, rc.tstride, Tn, b, n, th, rc.gain, rc.lam, rc.has_init, rc.v0, \
                                               mem, n, v, spikes_at, nothing);
  RSNN_RC(true, true) RSNN_RC(true, false) RSNN_RC(false, true) RSNN_RC(false, false)
#undef RSNN_RC
}

template <typename T, int kSg, bool kSoft, bool kDetach>
void backward_chunks(const T* gs, const T* mem, const T* sg, int64_t Tn, int64_t N, T th, const T* gain, const T* cur,
                     int64_t tstride, T lam, const SurrogateConsts<T>& sc, T* gi, bool sum_time, bool want_th,
                     double* th_part, double* gain_part, double* gv_part, const Recompute<T>* rc) {
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    alignas(64) T gv[kChunk];
    alignas(64) T gm_buf[kChunk];
    alignas(64) T thc[kChunk];
    std::vector<T> mbuf(rc ? Tn * kChunk : 0);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kChunk, n = std::min(kChunk, N - b);
      if (rc) recompute_block<T, kSoft>(*rc, Tn, b, n, th, mbuf.data(), gv, gm_buf);
      const T* m = rc ? mbuf.data() : mem + b;
      backward_block<T, kSg, kSoft, kDetach>([&](int64_t t) { return gs + t * N + b; }, m, rc ? n : N, sg, Tn, N, b, n,
                                             th, gain,
                                             cur, tstride, lam, sc, gi, sum_time, want_th, gv, gm_buf, thc,
                                             th_part + c, cur ? gain_part + c * Tn : nullptr, gv_part + c);
    }
  });
}

// Backward of forward_pool_chunks: gs is the pooled spikes' gradient [T, P * (W / 2) * C]; each
// pooled value's gradient / 4 goes to its four neurons (avg_pool2d's backward), into a
// per-thread buffer; one block per pair of rows (P parts).
template <typename T, int kSg, bool kSoft, bool kDetach>
void backward_pool_chunks(const T* gs, const T* mem, const T* sg, int64_t Tn, int64_t N, T th, const T* gain,
                          const T* cur, int64_t tstride, T lam, const SurrogateConsts<T>& sc, T* gi, bool sum_time,
                          bool want_th, double* th_part, double* gain_part, double* gv_part, int64_t L, int64_t C,
                          const Recompute<T>* rc) {
  const int64_t P = N / (2 * L), w = L / (2 * C), Np = P * w * C;
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    std::vector<T> gv(2 * L), gm_buf(2 * L), thc(2 * L), g(2 * L), mbuf(rc ? Tn * 2 * L : 0);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p * 2 * L;
      if (rc) recompute_block<T, kSoft>(*rc, Tn, b, 2 * L, th, mbuf.data(), gv.data(), gm_buf.data());
      const T* m = rc ? mbuf.data() : mem + b;
      auto grad_at = [&](int64_t t) {
        unpool_rows<T>(gs + t * Np + p * w * C, L, w, C, g.data());
        return static_cast<const T*>(g.data());
      };
      backward_block<T, kSg, kSoft, kDetach>(grad_at, m, rc ? 2 * L : N, sg, Tn, N, b, 2 * L, th, gain, cur, tstride, lam,
                                             sc, gi,
                                             sum_time, want_th, gv.data(), gm_buf.data(), thc.data(), th_part + p,
                                             cur ? gain_part + p * Tn : nullptr, gv_part + p);
    }
  });
}

// pool_L > 0: backward_pool_chunks (gs is the pooled gradient; th_part etc. have one entry per pair of rows).
template <typename T>
void backward_impl(int sg, bool soft, bool detach, const T* gs, const T* mem, const T* given, int64_t Tn, int64_t N, T th,
                   const T* gain, const T* cur, int64_t tstride, T lam, const SurrogateConsts<T>& sc, T* gi,
                   bool sum_time, bool want_th, double* th_part, double* gain_part, double* gv_part,
                   int64_t pool_L, int64_t pool_C, const Recompute<T>* rc) {
#define RSNN_BWD(G, S, D) \
  if (sg == G && soft == S && detach == D) { \
    if (pool_L > 0) \
      return backward_pool_chunks<T, G, S, D>(gs, mem, given, Tn, N, th, gain, cur, tstride, lam, sc, gi, sum_time, \
                                              want_th, th_part, gain_part, gv_part, pool_L, pool_C, rc); \
    return backward_chunks<T, G, S, D>(gs, mem, given, Tn, N, th, gain, cur, tstride, lam, sc, gi, sum_time, want_th, \
                                       th_part, gain_part, gv_part, rc); \
  }
#define RSNN_BWD_SD(G) RSNN_BWD(G, true, true) RSNN_BWD(G, true, false) RSNN_BWD(G, false, true) \
  RSNN_BWD(G, false, false)
  RSNN_BWD_SD(TRIANGLE)
  RSNN_BWD_SD(EXP)
  RSNN_BWD_SD(RECTANGLE)
  RSNN_BWD_SD(STE)
  RSNN_BWD_SD(SIGMOID)
  RSNN_BWD_SD(ATAN)
  RSNN_BWD_SD(PDSG)
  RSNN_BWD_SD(GIVEN)
#undef RSNN_BWD_SD
#undef RSNN_BWD
  TORCH_CHECK(false, "unknown surrogate id ", sg);
}

void check(const torch::Tensor& x, const char* what) {
  TORCH_CHECK(x.device().is_cpu(), what, " must be on the CPU");
  TORCH_CHECK(x.is_contiguous(), what, " must be contiguous");
}

}  // namespace

// current: [T, N] or, with broadcast, [N] (the same current at every step).
// Returns (spikes [T, N], membrane [T, N] or an empty tensor). pool_L > 0: the spikes are
// pooled 2x2 / stride 2 (forward_pool_chunks): [T, N / 4].
std::vector<torch::Tensor> forward_any(torch::Tensor current, int64_t Tn, bool broadcast, double threshold,
                                       c10::optional<torch::Tensor> gain, double lam, bool soft, bool has_init,
                                       double v0, bool keep_membrane, bool fused, int64_t pool_L, int64_t pool_C) {
  check(current, "current");
  const int64_t N = broadcast ? current.numel() : current.numel() / std::max<int64_t>(Tn, 1);
  if (pool_L > 0)
    TORCH_CHECK(pool_C > 0 && pool_L % (2 * pool_C) == 0 && N % (2 * pool_L) == 0,
                "pooled neurons need pairs of rows of an even number of positions");
  auto opts = current.options();
  auto spikes = torch::empty({Tn, pool_L > 0 ? N / 4 : N}, opts);
  auto membrane = keep_membrane ? torch::empty({Tn, N}, opts) : torch::empty({0}, opts);
  const int64_t tstride = broadcast ? 0 : N;
  AT_DISPATCH_FLOATING_TYPES(current.scalar_type(), "lif_forward", [&] {
    const scalar_t* g = nullptr;
    torch::Tensor gc;
    if (gain.has_value()) {
      gc = gain->contiguous();
      check(gc, "gain");
      g = gc.data_ptr<scalar_t>();
    }
    forward_impl<scalar_t>(fused, current.data_ptr<scalar_t>(), tstride, Tn, N, static_cast<scalar_t>(threshold), g,
       static_cast<scalar_t>(lam), soft, has_init, static_cast<scalar_t>(v0), spikes.data_ptr<scalar_t>(),
       keep_membrane ? membrane.data_ptr<scalar_t>() : nullptr, pool_L, pool_C);
  });
  return {spikes, membrane};
}

std::vector<torch::Tensor> lif_forward(torch::Tensor current, int64_t Tn, bool broadcast, double threshold,
                                       c10::optional<torch::Tensor> gain, double lam, bool soft, bool has_init,
                                       double v0, bool keep_membrane, bool fused) {
  return forward_any(current, Tn, broadcast, threshold, gain, lam, soft, has_init, v0, keep_membrane, fused, 0, 1);
}

namespace {

// The backward of forward_any from the saved membrane [T, N], or (recompute) from the current the
// forward was given (`current`, as forward_any's, with its settings): the membrane is recomputed
// block by block, the same bits, instead of being written out by the forward and read back.
// With want_gain, `current` also gives the gain's gradient.
std::vector<torch::Tensor> backward_core(const torch::Tensor& grad_spikes, const torch::Tensor& membrane, int64_t Tn,
                                         int64_t N, double threshold, const c10::optional<torch::Tensor>& gain,
                                         const c10::optional<torch::Tensor>& current, bool want_gain, bool broadcast,
                                         double lam, bool soft, bool detach_reset, int64_t surrogate, double width,
                                         double alpha, bool want_current, bool want_threshold, bool sum_time,
                                         const c10::optional<torch::Tensor>& given, int64_t pool_L, int64_t pool_C,
                                         bool recompute, bool has_init, double v0, bool fused) {
  check(grad_spikes, "grad_spikes");
  const int64_t chunks = pool_L > 0 ? N / (2 * pool_L) : (N + kChunk - 1) / kChunk;
  if (pool_L > 0) {
    TORCH_CHECK(pool_C > 0 && pool_L % (2 * pool_C) == 0 && N % (2 * pool_L) == 0 &&
                grad_spikes.numel() * 4 == Tn * N, "the pooled gradient must be [T, N / 4] of pairs of rows");
  } else {
    TORCH_CHECK(grad_spikes.numel() == Tn * N, "grad_spikes must be [T, N]");
  }
  auto opts = grad_spikes.options();
  auto dopts = opts.dtype(torch::kFloat64);
  auto gi = want_current ? (sum_time ? torch::empty({N}, opts) : torch::empty({Tn, N}, opts)) : torch::empty({0}, opts);
  auto th_part = torch::zeros({chunks}, dopts);
  auto gv_part = torch::zeros({chunks}, dopts);
  auto gain_part = torch::zeros({want_gain ? chunks : 0, Tn}, dopts);
  TORCH_CHECK((surrogate == GIVEN) == given.has_value(), "the GIVEN surrogate needs its derivatives, and only it");
  TORCH_CHECK(!(recompute || want_gain) || current.has_value(), "the current is needed");
  torch::Tensor given_c;
  if (given.has_value()) {
    given_c = given->contiguous();
    TORCH_CHECK(given_c.numel() == Tn * N && given_c.scalar_type() == grad_spikes.scalar_type(),
                "given derivatives must match the membrane");
  }
  AT_DISPATCH_FLOATING_TYPES(grad_spikes.scalar_type(), "lif_backward", [&] {
    const scalar_t* g = nullptr;
    const scalar_t* c = nullptr;
    torch::Tensor gc, cc;
    if (gain.has_value()) {
      gc = gain->contiguous();
      TORCH_CHECK(gc.numel() == Tn && gc.scalar_type() == grad_spikes.scalar_type(), "gain must be [T]");
      g = gc.data_ptr<scalar_t>();
    }
    if (current.has_value()) {
      cc = current->contiguous();
      TORCH_CHECK(cc.numel() == (broadcast ? N : Tn * N) && cc.scalar_type() == grad_spikes.scalar_type(),
                  "current must be [T, N] (or [N] broadcast)");
      c = cc.data_ptr<scalar_t>();
    }
    Recompute<scalar_t> rc{c, broadcast ? 0 : N, g, static_cast<scalar_t>(lam), static_cast<scalar_t>(v0), fused, has_init};
    SurrogateConsts<scalar_t> sc(width, alpha);
    backward_impl<scalar_t>(static_cast<int>(surrogate), soft, detach_reset, grad_spikes.data_ptr<scalar_t>(),
                            recompute ? nullptr : membrane.data_ptr<scalar_t>(),
                            given.has_value() ? given_c.data_ptr<scalar_t>() : nullptr,
                            Tn, N, static_cast<scalar_t>(threshold), g, want_gain ? c : nullptr,
                            broadcast ? 0 : N, static_cast<scalar_t>(lam), sc,
                            want_current ? gi.data_ptr<scalar_t>() : nullptr, sum_time, want_threshold,
                            th_part.data_ptr<double>(), want_gain ? gain_part.data_ptr<double>() : nullptr,
                            gv_part.data_ptr<double>(), pool_L, pool_C, recompute ? &rc : nullptr);
  });
  auto grad_gain = want_gain ? gain_part.sum(0).to(opts.dtype()) : torch::empty({0}, opts);
  return {gi, th_part.sum().to(opts.dtype()), grad_gain, gv_part.sum().to(opts.dtype())};
}

}  // namespace

// Returns (grad_current [T, N], or with sum_time [N] = its sum over t (the gradient of a current
// repeated at every step), or empty; grad_threshold [] (without the init term); grad_gain [T] or
// empty; sum over neurons of dL/dv[-1] (0-dim, for the init term)).
std::vector<torch::Tensor> backward_any(torch::Tensor grad_spikes, torch::Tensor membrane, double threshold,
                                        c10::optional<torch::Tensor> gain, c10::optional<torch::Tensor> current,
                                        bool broadcast, double lam, bool soft, bool detach_reset, int64_t surrogate,
                                        double width, double alpha, bool want_current, bool want_threshold,
                                        bool sum_time, c10::optional<torch::Tensor> given,
                                        int64_t pool_L, int64_t pool_C) {
  check(membrane, "membrane");
  TORCH_CHECK(membrane.dim() == 2 && membrane.scalar_type() == grad_spikes.scalar_type(), "membrane must be [T, N]");
  return backward_core(grad_spikes, membrane, membrane.size(0), membrane.size(1), threshold, gain, current,
                       current.has_value(), broadcast, lam, soft, detach_reset, surrogate, width, alpha, want_current,
                       want_threshold, sum_time, given, pool_L, pool_C, false, false, 0.0, false);
}

// backward_any without a saved membrane: recomputed from `current` and the forward's settings
// (Tn, broadcast, gain, lam, soft, has_init, v0, fused as given to forward_any); want_gain: the
// gain's gradient too. Same results, bit for bit.
std::vector<torch::Tensor> backward_recompute(torch::Tensor grad_spikes, torch::Tensor current, int64_t Tn,
                                              bool broadcast, double threshold, c10::optional<torch::Tensor> gain,
                                              bool want_gain, double lam, bool soft, bool has_init, double v0,
                                              bool fused, bool detach_reset, int64_t surrogate, double width,
                                              double alpha, bool want_current, bool want_threshold, bool sum_time,
                                              int64_t pool_L, int64_t pool_C) {
  check(current, "current");
  TORCH_CHECK(Tn > 0, "need at least one step");
  const int64_t N = broadcast ? current.numel() : current.numel() / Tn;
  TORCH_CHECK(surrogate != GIVEN, "given derivatives need the saved membrane");
  return backward_core(grad_spikes, torch::Tensor(), Tn, N, threshold, gain, current, want_gain, broadcast, lam, soft,
                       detach_reset, surrogate, width, alpha, want_current, want_threshold, sum_time, c10::nullopt,
                       pool_L, pool_C, true, has_init, v0, fused);
}

std::vector<torch::Tensor> lif_backward(torch::Tensor grad_spikes, torch::Tensor membrane, double threshold,
                                        c10::optional<torch::Tensor> gain, c10::optional<torch::Tensor> current,
                                        bool broadcast, double lam, bool soft, bool detach_reset, int64_t surrogate,
                                        double width, double alpha, bool want_current, bool want_threshold,
                                        bool sum_time, c10::optional<torch::Tensor> given) {
  return backward_any(grad_spikes, membrane, threshold, gain, current, broadcast, lam, soft, detach_reset, surrogate,
                      width, alpha, want_current, want_threshold, sum_time, given, 0, 1);
}

// 2x2 average pooling, stride 2, no padding (floor), as pairs of rows (pool_rows): planes of H
// rows of L values, a row being W positions of C values. The sum runs in torch's order
// ((x00 + x01) + x10) + x11, then / 4, so values are avg_pool2d's bit for bit on either layout.
torch::Tensor pool2_planes(const torch::Tensor& x, int64_t planes, int64_t H, int64_t W, int64_t C,
                           std::vector<int64_t> out_sizes) {
  const int64_t h = H / 2, w = W / 2, L = W * C;
  auto out = torch::empty(out_sizes, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool2_forward", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, planes * h, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = r / h, i = r % h;
        pool_rows<scalar_t>(in + (p * H + 2 * i) * L, L, w, C, o + (p * h + i) * w * C);
      }
    });
  });
  return out;
}

// Backward of pool2_planes: each pooled gradient / 4 to its four inputs; rows and columns that
// the floor left out (odd H or W) get 0.
torch::Tensor unpool2_planes(const torch::Tensor& g, int64_t planes, int64_t H, int64_t W, int64_t C,
                             std::vector<int64_t> out_sizes) {
  const int64_t h = H / 2, w = W / 2, L = W * C;
  auto out = torch::empty(out_sizes, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "pool2_backward", [&] {
    const scalar_t* gi = g.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, planes * h, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = r / h, i = r % h;
        unpool_rows<scalar_t>(gi + (p * h + i) * w * C, L, w, C, o + (p * H + 2 * i) * L);
        if (H % 2 && i == h - 1) std::fill_n(o + (p * H + H - 1) * L, L, scalar_t(0));
      }
    });
    if (h == 0) std::fill_n(o, out.numel(), scalar_t(0));
  });
  return out;
}

// On contiguous [..., H, W] (rows of W values).
torch::Tensor pool2_forward(torch::Tensor x) {
  check(x, "x");
  TORCH_CHECK(x.dim() >= 2, "pool2 needs [..., H, W]");
  const int64_t H = x.size(-2), W = x.size(-1);
  auto sizes = x.sizes().vec();
  sizes[sizes.size() - 2] = H / 2;
  sizes[sizes.size() - 1] = W / 2;
  return pool2_planes(x, x.numel() / std::max<int64_t>(H * W, 1), H, W, 1, sizes);
}

torch::Tensor pool2_backward(torch::Tensor g, int64_t H, int64_t W) {
  check(g, "grad");
  const int64_t h = g.size(-2), w = g.size(-1);
  auto sizes = g.sizes().vec();
  sizes[sizes.size() - 2] = H;
  sizes[sizes.size() - 1] = W;
  return unpool2_planes(g, g.numel() / std::max<int64_t>(h * w, 1), H, W, 1, sizes);
}

// On channels-last maps, contiguous [N, H, W, C] -> [N, H / 2, W / 2, C] (rows of W*C values).
torch::Tensor pool2_forward_nhwc(torch::Tensor x) {
  check(x, "x");
  TORCH_CHECK(x.dim() == 4, "pool2_nhwc needs [N, H, W, C]");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  return pool2_planes(x, N, H, W, C, {N, H / 2, W / 2, C});
}

torch::Tensor pool2_backward_nhwc(torch::Tensor g, int64_t H, int64_t W) {
  check(g, "grad");
  TORCH_CHECK(g.dim() == 4, "pool2_nhwc needs [N, h, w, C]");
  return unpool2_planes(g, g.size(0), H, W, g.size(3), {g.size(0), H, W, g.size(3)});
}

// Training batch norm's forward (robustsnn.batchnorm) in three passes over x, viewed as
// [outer, C, inner] (NCHW: outer = N, inner = H*W; channels-last: outer = N*H*W, inner = 1):
// the mean, the biased variance of the centred values (x - mean, squared in T, summed in
// double), and y = bias + (x - mean) * (invstd * weight). Partial sums are kept per block of
// `outer` and added in block order, so results do not depend on the number of threads.
// Returns (y like x, mean [C] double, var [C] double, mean [C] in x's dtype, invstd [C] in x's dtype).
std::vector<torch::Tensor> bn_forward(torch::Tensor x, c10::optional<torch::Tensor> weight,
                                      c10::optional<torch::Tensor> bias, double eps, int64_t C, int64_t inner) {
  TORCH_CHECK(x.device().is_cpu(), "x must be on the CPU");
  TORCH_CHECK(x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be dense");
  const int64_t outer = x.numel() / std::max<int64_t>(C * inner, 1), count = outer * inner;
  constexpr int64_t kRows = 64;
  const int64_t blocks = (outer + kRows - 1) / kRows;
  auto dopts = x.options().dtype(torch::kFloat64);
  auto part = torch::zeros({blocks, C}, dopts);
  auto y = torch::empty_like(x);
  auto mean_t = torch::empty({C}, x.options()), invstd_t = torch::empty({C}, x.options());
  torch::Tensor mean64, var64;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bn_forward", [&] {
    using T = scalar_t;
    const T* in = x.data_ptr<T>();
    double* pp = part.data_ptr<double>();
    T* mt = mean_t.data_ptr<T>();
    auto reduce = [&](auto&& add_block) {  // part[block][c] = sum of the block's terms of channel c
      part.zero_();
      at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) add_block(b * kRows, std::min(outer, (b + 1) * kRows), pp + b * C);
      });
      auto tot = torch::zeros({C}, dopts);  // added in block order, whatever the thread count
      double* t = tot.data_ptr<double>();
      for (int64_t b = 0; b < blocks; ++b)
        for (int64_t c = 0; c < C; ++c) t[c] += pp[b * C + c];
      return tot;
    };
    // channels-last rows: a block's (at most kRows) terms of a channel are summed in T, in row
    // order, then added to the double total (vector-wide in T; the same bits at any thread count)
    mean64 = reduce([&](int64_t o0, int64_t o1, double* acc) {
      if (inner == 1) {
        std::vector<T> s(C, T(0));
        for (int64_t o = o0; o < o1; ++o) {
          const T* row = in + o * C;
          for (int64_t c = 0; c < C; ++c) s[c] += row[c];
        }
        for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(s[c]);
        return;
      }
      for (int64_t o = o0; o < o1; ++o) {
        const T* row = in + o * C * inner;
        {
          for (int64_t c = 0; c < C; ++c) acc[c] += lane_sum(row + c * inner, inner);
        }
      }
    }) / static_cast<double>(count);
    const double* m64 = mean64.data_ptr<double>();
    for (int64_t c = 0; c < C; ++c) mt[c] = static_cast<T>(m64[c]);
    var64 = reduce([&](int64_t o0, int64_t o1, double* acc) {
      if (inner == 1) {
        std::vector<T> s(C, T(0));
        for (int64_t o = o0; o < o1; ++o) {
          const T* row = in + o * C;
          for (int64_t c = 0; c < C; ++c) {
            const T d = row[c] - mt[c];
            s[c] += d * d;
          }
        }
        for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(s[c]);
        return;
      }
      std::vector<T> d(inner);
      for (int64_t o = o0; o < o1; ++o) {
        const T* row = in + o * C * inner;
        {
          for (int64_t c = 0; c < C; ++c) {
            for (int64_t i = 0; i < inner; ++i) d[i] = row[c * inner + i] - mt[c];
            acc[c] += lane_dot(d.data(), d.data(), inner);
          }
        }
      }
    }) / static_cast<double>(count);
    const double* v64 = var64.data_ptr<double>();
    T* is = invstd_t.data_ptr<T>();
    std::vector<T> scale(C), shift(C, T(0));
    const T* w = weight.has_value() ? weight->data_ptr<T>() : nullptr;
    const T* bb = bias.has_value() ? bias->data_ptr<T>() : nullptr;
    for (int64_t c = 0; c < C; ++c) {
      is[c] = static_cast<T>(1.0 / std::sqrt(v64[c] + eps));
      scale[c] = w ? is[c] * w[c] : is[c];
      if (bb) shift[c] = bb[c];
    }
    T* out = y.data_ptr<T>();
    at::parallel_for(0, outer, 16, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        const T* row = in + o * C * inner;
        T* dst = out + o * C * inner;
        if (inner == 1) {
          for (int64_t c = 0; c < C; ++c) dst[c] = shift[c] + (row[c] - mt[c]) * scale[c];
        } else {
          for (int64_t c = 0; c < C; ++c) {
            const T m = mt[c], sc = scale[c], sh = shift[c];
            for (int64_t i = 0; i < inner; ++i) dst[c * inner + i] = sh + (row[c * inner + i] - m) * sc;
          }
        }
      }
    });
  });
  return {y, mean64, var64, mean_t, invstd_t};
}

template <typename T>
inline void assg_chunk(const T* __restrict mem, T th, T* __restrict mp, T* __restrict dp, T* __restrict out, int64_t n,
                       T b1, T c1, T b2, T c2, T r, T eps, T pi, T tan_pa, T half_a, T pi_half_a) {
  for (int64_t i = 0; i < n; ++i) {
    const T u = mem[i] - th;
    const T a = std::abs(u);
    const T m = b1 * mp[i] + c1 * a;
    const T d = b2 * dp[i] + c2 * std::abs(a - m);
    mp[i] = m;
    dp[i] = d;
    const T w = pi * ((m + r * d) + eps) / tan_pa;
    const T z = (pi_half_a * u) / w;
    out[i] = half_a / (T(1) + z * z) / w;
  }
}

// ASSG's step (gradhooks.ASSG, atan shape) at u = membrane - threshold: the running statistics of |u|
// over attack iterations,
// M <- b1 M + (1 - b1)|u|, D <- b2 D + (1 - b2)||u| - M|, updated in place, and the atan derivative
// at u with the per-element width pi (M + r D + 1e-4) / tan(pi A), in one pass over u.
torch::Tensor assg_step(torch::Tensor u, double threshold, torch::Tensor M, torch::Tensor D, double beta1, double beta2,
                        double relax, double A, double alpha) {
  check(u, "membrane");
  check(M, "M");
  check(D, "D");
  TORCH_CHECK(M.numel() == u.numel() && D.numel() == u.numel(), "ASSG statistics must match u");
  TORCH_CHECK(M.scalar_type() == u.scalar_type() && D.scalar_type() == u.scalar_type(), "ASSG statistics dtype");
  auto sg = torch::empty_like(u);
  const int64_t n = u.numel();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "assg_step", [&] {
    using T = scalar_t;
    const T b1 = static_cast<T>(beta1), c1 = static_cast<T>(1 - beta1);
    const T b2 = static_cast<T>(beta2), c2 = static_cast<T>(1 - beta2);
    const T r = static_cast<T>(relax), eps = static_cast<T>(1e-4), pi = static_cast<T>(M_PI);
    const T tan_pa = static_cast<T>(std::tan(M_PI * A));
    const T half_a = static_cast<T>(alpha / 2), pi_half_a = static_cast<T>(M_PI / 2 * alpha);
    const T* up = u.data_ptr<T>();
    T* mp = M.data_ptr<T>();
    T* dp = D.data_ptr<T>();
    T* out = sg.data_ptr<T>();
    at::parallel_for(0, n, 16384, [&](int64_t i0, int64_t i1) {
      assg_chunk<T>(up + i0, static_cast<T>(threshold), mp + i0, dp + i0, out + i0, i1 - i0, b1, c1, b2, c2, r, eps, pi, tan_pa, half_a, pi_half_a);
    });
  });
  return sg;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &lif_forward, "fused multi-step LIF forward");
  m.def("backward", &lif_backward, "fused multi-step LIF surrogate backward");
  m.def("forward_pool", &forward_any, "forward, then 2x2 average pooling of the spikes (pool_L, pool_C)");
  m.def("backward_pool", &backward_any, "backward from the pooled spikes' gradient (pool_L, pool_C)");
  m.def("backward_recompute", &backward_recompute, "backward that recomputes the membrane from the current");
  m.def("pool2_forward", &pool2_forward, "2x2 average pooling, stride 2");
  m.def("pool2_backward", &pool2_backward, "backward of pool2_forward");
  m.def("pool2_forward_nhwc", &pool2_forward_nhwc, "2x2 average pooling, stride 2, channels-last [N, H, W, C]");
  m.def("pool2_backward_nhwc", &pool2_backward_nhwc, "backward of pool2_forward_nhwc");
  m.def("bn_forward", &bn_forward, "training batch norm forward: three passes, statistics in double");
  m.def("assg_step", &assg_step, "ASSG running statistics and atan derivative, one pass");
}
