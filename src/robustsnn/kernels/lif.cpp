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

template <typename T, bool kFused, bool kGain, bool kSoft, bool kMem>
void forward_chunks(const T* cur, int64_t tstride, int64_t Tn, int64_t N, T th, const T* gain, T lam,
                    bool has_init, T v0, T* spikes, T* membrane) {
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    alignas(64) T v[kChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kChunk, n = std::min(kChunk, N - b);
      for (int64_t t = 0; t < Tn; ++t) {
        const T* it = cur + t * tstride + b;
        T* st = spikes + t * N + b;
        T* mt = kMem ? membrane + t * N + b : nullptr;
        const T gt = kGain ? gain[t] : T(1);
        if (t == 0 && !has_init) {
          step<T, kFused, kGain, kSoft, kMem, true>(it, gt, th, lam, v0, true, v, st, mt, n);
        } else if (t == 0) {
          step<T, kFused, kGain, kSoft, kMem, false>(it, gt, th, lam, v0, true, v, st, mt, n);
        } else {
          step<T, kFused, kGain, kSoft, kMem, false>(it, gt, th, lam, v0, false, v, st, mt, n);
        }
      }
    }
  });
}

template <typename T>
void forward_impl(bool fused, const T* cur, int64_t tstride, int64_t Tn, int64_t N, T th, const T* gain, T lam,
                  bool soft, bool has_init, T v0, T* spikes, T* membrane) {
  // 16 specialisations: fused x gain x soft x keep-membrane
#define RSNN_FWD(F, G, S, M) \
  if (fused == F && (gain != nullptr) == G && soft == S && (membrane != nullptr) == M) \
    return forward_chunks<T, F, G, S, M>(cur, tstride, Tn, N, th, gain, lam, has_init, v0, spikes, membrane);
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

template <typename T, int kSg, bool kSoft, bool kDetach>
void backward_chunks(const T* gs, const T* mem, const T* sg, int64_t Tn, int64_t N, T th, const T* gain, const T* cur,
                     int64_t tstride, T lam, const SurrogateConsts<T>& sc, T* gi, bool sum_time, bool want_th,
                     double* th_part, double* gain_part, double* gv_part) {
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    alignas(64) T gv[kChunk];
    alignas(64) T gm_buf[kChunk];
    alignas(64) T thc[kChunk];
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * kChunk, n = std::min(kChunk, N - b);
      T* gsum = (gi && sum_time) ? gi + b : nullptr;
      double th_acc = 0.0;
      for (int64_t t = Tn - 1; t >= 0; --t) {
        const T* g_t = gs + t * N + b;
        const T* m_t = mem + t * N + b;
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
        if (cur) gain_part[c * Tn + t] = lane_dot(gm, cur + t * tstride + b, n);
      }
      th_part[c] = th_acc;
      gv_part[c] = lane_sum(gv, n);
    }
  });
}

template <typename T>
void backward_impl(int sg, bool soft, bool detach, const T* gs, const T* mem, const T* given, int64_t Tn, int64_t N, T th,
                   const T* gain, const T* cur, int64_t tstride, T lam, const SurrogateConsts<T>& sc, T* gi,
                   bool sum_time, bool want_th, double* th_part, double* gain_part, double* gv_part) {
#define RSNN_BWD(G, S, D) \
  if (sg == G && soft == S && detach == D) \
    return backward_chunks<T, G, S, D>(gs, mem, given, Tn, N, th, gain, cur, tstride, lam, sc, gi, sum_time, want_th, \
                                       th_part, gain_part, gv_part);
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
// Returns (spikes [T, N], membrane [T, N] or an empty tensor).
std::vector<torch::Tensor> lif_forward(torch::Tensor current, int64_t Tn, bool broadcast, double threshold,
                                       c10::optional<torch::Tensor> gain, double lam, bool soft, bool has_init,
                                       double v0, bool keep_membrane, bool fused) {
  check(current, "current");
  const int64_t N = broadcast ? current.numel() : current.numel() / std::max<int64_t>(Tn, 1);
  auto opts = current.options();
  auto spikes = torch::empty({Tn, N}, opts);
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
       keep_membrane ? membrane.data_ptr<scalar_t>() : nullptr);
  });
  return {spikes, membrane};
}

// Returns (grad_current [T, N], or with sum_time [N] = its sum over t (the gradient of a current
// repeated at every step), or empty; grad_threshold [] (without the init term); grad_gain [T] or
// empty; sum over neurons of dL/dv[-1] (0-dim, for the init term)).
std::vector<torch::Tensor> lif_backward(torch::Tensor grad_spikes, torch::Tensor membrane, double threshold,
                                        c10::optional<torch::Tensor> gain, c10::optional<torch::Tensor> current,
                                        bool broadcast, double lam, bool soft, bool detach_reset, int64_t surrogate,
                                        double width, double alpha, bool want_current, bool want_threshold,
                                        bool sum_time, c10::optional<torch::Tensor> given) {
  check(grad_spikes, "grad_spikes");
  check(membrane, "membrane");
  const int64_t Tn = membrane.size(0), N = membrane.size(1);
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  auto opts = membrane.options();
  auto dopts = opts.dtype(torch::kFloat64);
  auto gi = want_current ? (sum_time ? torch::empty({N}, opts) : torch::empty({Tn, N}, opts)) : torch::empty({0}, opts);
  auto th_part = torch::zeros({chunks}, dopts);
  auto gv_part = torch::zeros({chunks}, dopts);
  const bool want_gain = current.has_value();
  auto gain_part = torch::zeros({want_gain ? chunks : 0, Tn}, dopts);
  TORCH_CHECK((surrogate == GIVEN) == given.has_value(), "the GIVEN surrogate needs its derivatives, and only it");
  torch::Tensor given_c;
  if (given.has_value()) {
    given_c = given->contiguous();
    TORCH_CHECK(given_c.numel() == Tn * N && given_c.scalar_type() == membrane.scalar_type(),
                "given derivatives must match the membrane");
  }
  AT_DISPATCH_FLOATING_TYPES(membrane.scalar_type(), "lif_backward", [&] {
    const scalar_t* g = nullptr;
    const scalar_t* c = nullptr;
    torch::Tensor gc, cc;
    if (gain.has_value()) {
      gc = gain->contiguous();
      g = gc.data_ptr<scalar_t>();
    }
    if (want_gain) {
      cc = current->contiguous();
      c = cc.data_ptr<scalar_t>();
    }
    SurrogateConsts<scalar_t> sc(width, alpha);
    backward_impl<scalar_t>(static_cast<int>(surrogate), soft, detach_reset, grad_spikes.data_ptr<scalar_t>(),
                            membrane.data_ptr<scalar_t>(), given.has_value() ? given_c.data_ptr<scalar_t>() : nullptr,
                            Tn, N, static_cast<scalar_t>(threshold), g, c,
                            broadcast ? 0 : N, static_cast<scalar_t>(lam), sc,
                            want_current ? gi.data_ptr<scalar_t>() : nullptr, sum_time, want_threshold,
                            th_part.data_ptr<double>(), want_gain ? gain_part.data_ptr<double>() : nullptr,
                            gv_part.data_ptr<double>());
  });
  auto grad_gain = want_gain ? gain_part.sum(0).to(opts.dtype()) : torch::empty({0}, opts);
  return {gi, th_part.sum().to(opts.dtype()), grad_gain, gv_part.sum().to(opts.dtype())};
}

// 2x2 average pooling, stride 2, no padding (floor), on contiguous [..., H, W]: the sum runs
// in torch's order ((x00 + x01) + x10) + x11, then / 4, so values are avg_pool2d's bit for bit.
torch::Tensor pool2_forward(torch::Tensor x) {
  check(x, "x");
  TORCH_CHECK(x.dim() >= 2, "pool2 needs [..., H, W]");
  const int64_t H = x.size(-2), W = x.size(-1), h = H / 2, w = W / 2;
  const int64_t P = x.numel() / std::max<int64_t>(H * W, 1);
  auto sizes = x.sizes().vec();
  sizes[sizes.size() - 2] = h;
  sizes[sizes.size() - 1] = w;
  auto out = torch::empty(sizes, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool2_forward", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, P * h, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = r / h, i = r % h;
        const scalar_t* a = in + p * H * W + 2 * i * W;
        const scalar_t* b = a + W;
        scalar_t* dst = o + p * h * w + i * w;
        for (int64_t j = 0; j < w; ++j)
          dst[j] = (((a[2 * j] + a[2 * j + 1]) + b[2 * j]) + b[2 * j + 1]) / scalar_t(4);
      }
    });
  });
  return out;
}

torch::Tensor pool2_backward(torch::Tensor g, int64_t H, int64_t W) {
  check(g, "grad");
  const int64_t h = g.size(-2), w = g.size(-1);
  const int64_t P = g.numel() / std::max<int64_t>(h * w, 1);
  auto sizes = g.sizes().vec();
  sizes[sizes.size() - 2] = H;
  sizes[sizes.size() - 1] = W;
  auto out = torch::empty(sizes, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "pool2_backward", [&] {
    const scalar_t* gi = g.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, P * H, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t p = r / H, y = r % H, i = y / 2;
        scalar_t* dst = o + p * H * W + y * W;
        if (i >= h) {  // odd H: the last row is not pooled
          for (int64_t x = 0; x < W; ++x) dst[x] = scalar_t(0);
          continue;
        }
        const scalar_t* src = gi + p * h * w + i * w;
        for (int64_t j = 0; j < w; ++j) {
          const scalar_t v = src[j] / scalar_t(4);
          dst[2 * j] = v;
          dst[2 * j + 1] = v;
        }
        for (int64_t x = 2 * w; x < W; ++x) dst[x] = scalar_t(0);
      }
    });
  });
  return out;
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
  m.def("pool2_forward", &pool2_forward, "2x2 average pooling, stride 2");
  m.def("pool2_backward", &pool2_backward, "backward of pool2_forward");
  m.def("assg_step", &assg_step, "ASSG running statistics and atan derivative, one pass");
}
