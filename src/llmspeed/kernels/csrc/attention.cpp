// Paged decode attention: one new query token per batch row attends to its keys, which are read IN PLACE from a
// head-major paged KV cache through a slot table (no gather copy). torch.ops.llmspeed.paged_decode_attention.
//
// Work unit = (batch row b, kv head): its G = H / Hkv query heads are computed together, so every K/V row is
// loaded once and used G times. Two passes over the keys: (1) scores s[g, j] = scale * q_g . K[slot_j] and the
// per-head max; (2) p = exp(s - max), sum p, acc_g += p * V[slot_j]; out = acc / sum. Float32 throughout.
// AVX-512 path (function target attributes, runtime ISA level kIsaAvx512 and above, see torch.ops.llmspeed.isa) or a portable
// scalar one; D is any size (16 lanes at a time, masked tail).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LS_X86 1
#else
#define LS_X86 0
#endif

namespace llmspeed {
namespace {

struct AttnArgs {
  const float* q;        // [B, H, D]
  const float* k;        // [Hkv, NSLOTS, D]
  const float* v;        // [Hkv, NSLOTS, D]
  const int64_t* slots;  // [B, S]
  const int64_t* n_valid;  // [B]
  float* out;            // [B, H, D]
  int64_t B, H, Hkv, NSLOTS, D, S;
  float scale;
};

// Scratch (per thread): scores [G, S], acc [G, D].
using AttnKernel = void (*)(const AttnArgs&, int64_t b, int64_t kvh, float* scores, float* acc);

void attn_pair_scalar(const AttnArgs& a, int64_t b, int64_t kvh, float* scores, float* acc) {
  const int64_t D = a.D, S = a.S, G = a.H / a.Hkv, n = a.n_valid[b];
  const float* q = a.q + (b * a.H + kvh * G) * D;  // the G query heads of this kv head, [G, D]
  const float* kbase = a.k + kvh * a.NSLOTS * D;
  const float* vbase = a.v + kvh * a.NSLOTS * D;
  const int64_t* slots = a.slots + b * S;
  for (int64_t j = 0; j < n; ++j) {
    const float* kr = kbase + slots[j] * D;
    for (int64_t g = 0; g < G; ++g) {
      float dot = 0.0f;
      for (int64_t d = 0; d < D; ++d) dot += q[g * D + d] * kr[d];
      scores[g * S + j] = dot * a.scale;
    }
  }
  std::fill(acc, acc + G * D, 0.0f);
  std::vector<float> sums(G);
  for (int64_t g = 0; g < G; ++g) {
    float* s = scores + g * S;
    const float mx = *std::max_element(s, s + n);
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - mx));
    sums[g] = sum;
  }
  for (int64_t j = 0; j < n; ++j) {
    const float* vr = vbase + slots[j] * D;
    for (int64_t g = 0; g < G; ++g) {
      const float p = scores[g * S + j];
      for (int64_t d = 0; d < D; ++d) acc[g * D + d] += p * vr[d];
    }
  }
  float* out = a.out + (b * a.H + kvh * G) * D;
  for (int64_t g = 0; g < G; ++g) {
    const float inv = 1.0f / sums[g];
    for (int64_t d = 0; d < D; ++d) out[g * D + d] = acc[g * D + d] * inv;
  }
}

#if LS_X86
#define LS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

// exp(x) for x <= 0 (Cephes expf: range reduction by ln 2, degree-5 polynomial, scale by 2^n with vscalefps);
// relative error ~1e-7. x below -87.3 (incl. -inf) gives ~0.
LS_AVX512 inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, fx);
}

inline __mmask16 tail_mask(int64_t r) { return static_cast<__mmask16>(r >= 16 ? 0xFFFF : (1u << r) - 1u); }

LS_AVX512 inline void prefetch_row(const float* p, int64_t D) {
  for (int64_t d = 0; d < D; d += 16) _mm_prefetch(reinterpret_cast<const char*>(p + d), _MM_HINT_T0);
}

constexpr int64_t kPf = 6;  // keys ahead to prefetch (rows are scattered: the hardware prefetcher cannot follow)
constexpr int64_t kGb = 8;  // query heads per register block in the score pass

LS_AVX512 void attn_pair_avx512(const AttnArgs& a, int64_t b, int64_t kvh, float* scores, float* acc) {
  const int64_t D = a.D, S = a.S, G = a.H / a.Hkv, n = a.n_valid[b];
  const float* q = a.q + (b * a.H + kvh * G) * D;  // [G, D]
  const float* kbase = a.k + kvh * a.NSLOTS * D;
  const float* vbase = a.v + kvh * a.NSLOTS * D;
  const int64_t* slots = a.slots + b * S;
  for (int64_t j = 0; j < std::min(n, kPf); ++j) prefetch_row(kbase + slots[j] * D, D);
  // pass 1: scores, each K row loaded once per block of <= 8 query heads
  for (int64_t j = 0; j < n; ++j) {
    if (j + kPf < n) prefetch_row(kbase + slots[j + kPf] * D, D);
    const float* kr = kbase + slots[j] * D;
    for (int64_t g0 = 0; g0 < G; g0 += kGb) {
      const int64_t gn = std::min(kGb, G - g0);
      __m512 dot[kGb];
      for (int64_t g = 0; g < gn; ++g) dot[g] = _mm512_setzero_ps();
      for (int64_t d = 0; d < D; d += 16) {
        const __mmask16 m = tail_mask(D - d);
        const __m512 kv = _mm512_maskz_loadu_ps(m, kr + d);
        for (int64_t g = 0; g < gn; ++g)
          dot[g] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + (g0 + g) * D + d), kv, dot[g]);
      }
      for (int64_t g = 0; g < gn; ++g) scores[(g0 + g) * S + j] = _mm512_reduce_add_ps(dot[g]) * a.scale;
    }
  }
  for (int64_t j = 0; j < std::min(n, kPf); ++j) prefetch_row(vbase + slots[j] * D, D);
  // softmax numerators in place, per query head
  float sums[64];
  std::vector<float> big_sums(G > 64 ? G : 0);
  float* sum_g = G > 64 ? big_sums.data() : sums;
  for (int64_t g = 0; g < G; ++g) {
    float* s = scores + g * S;
    __m512 mx = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t j = 0; j < n; j += 16)
      mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask(n - j), s + j));
    const __m512 vmx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      const __m512 p = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vmx));
      _mm512_mask_storeu_ps(s + j, m, p);
      sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, p));
    }
    sum_g[g] = _mm512_reduce_add_ps(sum);
  }
  // pass 2: acc[g] += p[g, j] * V[slot_j], each V row loaded once per 16 columns
  std::fill(acc, acc + G * D, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    if (j + kPf < n) prefetch_row(vbase + slots[j + kPf] * D, D);
    const float* vr = vbase + slots[j] * D;
    for (int64_t d = 0; d < D; d += 16) {
      const __mmask16 m = tail_mask(D - d);
      const __m512 vv = _mm512_maskz_loadu_ps(m, vr + d);
      for (int64_t g = 0; g < G; ++g) {
        float* ag = acc + g * D + d;
        _mm512_mask_storeu_ps(ag, m, _mm512_fmadd_ps(_mm512_set1_ps(scores[g * S + j]), vv,
                                                     _mm512_maskz_loadu_ps(m, ag)));
      }
    }
  }
  float* out = a.out + (b * a.H + kvh * G) * D;
  for (int64_t g = 0; g < G; ++g) {
    const __m512 inv = _mm512_set1_ps(1.0f / sum_g[g]);
    for (int64_t d = 0; d < D; d += 16) {
      const __mmask16 m = tail_mask(D - d);
      _mm512_mask_storeu_ps(out + g * D + d, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, acc + g * D + d), inv));
    }
  }
}
#endif

void check_f32_3d(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "llmspeed::paged_decode_attention: ", name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.dim() == 3, "llmspeed::paged_decode_attention: ", name,
              " must be a 3-D float32 tensor, got ", t.scalar_type(), " ", t.sizes());
}

// q [B, H, D] f32, k_cache/v_cache [Hkv, NSLOTS, D] f32 contiguous, slots [B, S] i64, n_valid [B] i64 -> [B, H, D].
at::Tensor paged_decode_attention(const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& slots_in, const at::Tensor& n_valid_in, double scale) {
  check_f32_3d(q_in, "q"), check_f32_3d(k_cache, "k_cache"), check_f32_3d(v_cache, "v_cache");
  const int64_t B = q_in.size(0), H = q_in.size(1), D = q_in.size(2);
  const int64_t Hkv = k_cache.size(0), NSLOTS = k_cache.size(1);
  TORCH_CHECK(k_cache.sizes() == v_cache.sizes(), "llmspeed::paged_decode_attention: k_cache ", k_cache.sizes(),
              " and v_cache ", v_cache.sizes(), " must have the same shape [Hkv, NSLOTS, D]");
  TORCH_CHECK(k_cache.size(2) == D, "llmspeed::paged_decode_attention: cache head dim ", k_cache.size(2),
              " must equal q's head dim ", D);
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(),
              "llmspeed::paged_decode_attention: k_cache and v_cache must be contiguous");
  TORCH_CHECK(Hkv > 0 && H % Hkv == 0, "llmspeed::paged_decode_attention: q heads (", H,
              ") must be a multiple of kv heads (", Hkv, ")");
  TORCH_CHECK(slots_in.device().is_cpu() && n_valid_in.device().is_cpu(),
              "llmspeed::paged_decode_attention: slots and n_valid must be CPU tensors");
  TORCH_CHECK(slots_in.scalar_type() == at::kLong && slots_in.dim() == 2 && slots_in.size(0) == B,
              "llmspeed::paged_decode_attention: slots must be an int64 tensor [B, S] with B = ", B, ", got ",
              slots_in.scalar_type(), " ", slots_in.sizes());
  TORCH_CHECK(n_valid_in.scalar_type() == at::kLong && n_valid_in.dim() == 1 && n_valid_in.size(0) == B,
              "llmspeed::paged_decode_attention: n_valid must be an int64 tensor [B] with B = ", B, ", got ",
              n_valid_in.scalar_type(), " ", n_valid_in.sizes());
  const int64_t S = slots_in.size(1);
  const at::Tensor q = q_in.contiguous(), slots = slots_in.contiguous(), n_valid = n_valid_in.contiguous();
  const int64_t* sl = slots.data_ptr<int64_t>();
  const int64_t* nv = n_valid.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {  // only slots[b, :n_valid[b]] are read (the rest may be padding)
    TORCH_CHECK(nv[b] >= 1 && nv[b] <= S, "llmspeed::paged_decode_attention: n_valid[", b, "] = ", nv[b],
                " must be in [1, S = ", S, "]");
    for (int64_t j = 0; j < nv[b]; ++j)
      TORCH_CHECK(sl[b * S + j] >= 0 && sl[b * S + j] < NSLOTS, "llmspeed::paged_decode_attention: slots[", b, ", ",
                  j, "] = ", sl[b * S + j], " out of range [0, NSLOTS = ", NSLOTS, ")");
  }
  at::Tensor out = at::empty({B, H, D}, q.options());
  if (B == 0 || H == 0 || D == 0) return out.zero_();
  const AttnArgs a{q.data_ptr<float>(), k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), sl, nv,
                   out.data_ptr<float>(), B, H, Hkv, NSLOTS, D, S, static_cast<float>(scale)};
  AttnKernel kernel = attn_pair_scalar;
#if LS_X86
  if (current_isa() >= kIsaAvx512) kernel = attn_pair_avx512;  // implies avx512f/bw/vl (see lowbit.cpp)
#endif
  const int64_t G = H / Hkv;
  at::parallel_for(0, B * Hkv, 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> scores(G * S), acc(G * D);
    for (int64_t p = p0; p < p1; ++p) kernel(a, p / Hkv, p % Hkv, scores.data(), acc.data());
  });
  return out;
}

}  // namespace
}  // namespace llmspeed

TORCH_LIBRARY_FRAGMENT(llmspeed, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor slots, Tensor n_valid, "
        "float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(llmspeed, CPU, m) { m.impl("paged_decode_attention", &llmspeed::paged_decode_attention); }
