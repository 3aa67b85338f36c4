// torch.ops.llmspeed.int8g_linear: int8 weights with one float16 scale per (row, 32 columns), GGUF Q8_0's own form
// (w = q * d), times float32 activations. Math: ../reference.py (int8g_linear). This file: the AVX-512, AVX2+FMA
// and scalar kernels, the argument checks, threading over output rows and the op registration.
//
// Each 16 (AVX-512) or 8 (AVX2) weights of a row are decoded ONCE into registers as w = float(q) * d (exact in
// float32: 8-bit codes times an 11-bit float16 mantissa) and applied to a tile of up to MT activation rows, so M
// rows cost one weight stream plus M FMAs per weight vector: a dense float32 GEMM on the dequantized weight up to
// the summation order. At MT <= 2 two groups are in flight on separate accumulators (an FMA chain per
// accumulator would otherwise bound a decode step by FMA latency, not by memory).
//
// Software prefetch: the weight row PF_ROWS ahead (its codes and scales) streams into L2 (prefetcht1) while this
// row computes, as the q8 tiles do (lowbit_q8_tiles512.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LS_X86 1
#define LS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))
#define LS_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define LS_X86 0
#endif

namespace llmspeed {
namespace {

constexpr int64_t kGroup = 32;  // columns per scale (GGUF Q8_0's block)
constexpr int64_t kPfRows = 4;  // prefetch distance in weight rows

// x [M, K] f32, q [N, K] i8, scales [N, K/32] f16 bits, y [M, N] f32; K % 32 == 0.
struct Int8GArgs {
  const float* x;
  const int8_t* q;
  const uint16_t* scales;
  float* y;
  int64_t M, N, K;
};

inline float h2f(uint16_t bits) { return static_cast<float>(c10::Half(bits, c10::Half::from_bits())); }

void int8g_scalar(const Int8GArgs& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, G = K / kGroup;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < a.M; ++m) {
      const float* x = a.x + m * K;
      const int8_t* q = a.q + n * K;
      float acc = 0.0f;
      for (int64_t gi = 0; gi < G; ++gi) {
        const float d = h2f(a.scales[n * G + gi]);
        for (int64_t k = gi * kGroup; k < (gi + 1) * kGroup; ++k) acc += x[k] * (static_cast<float>(q[k]) * d);
      }
      a.y[m * a.N + n] = acc;
    }
}

#if LS_X86

// The next rows' codes and scales into L2 (a row of codes is K bytes, its scales K/16 bytes).
inline void prefetch_row(const Int8GArgs& a, int64_t n) {
  if (n >= a.N) return;
  const char* q = reinterpret_cast<const char*>(a.q + n * a.K);
  for (int64_t b = 0; b < a.K; b += 64) _mm_prefetch(q + b, _MM_HINT_T1);
  _mm_prefetch(reinterpret_cast<const char*>(a.scales + n * (a.K / kGroup)), _MM_HINT_T1);
}

// ---------------------------------------------------------------- AVX-512: 16 columns per vector

LS_AVX512 inline __m512 w16_512(const int8_t* q, __m512 d) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)))), d);
}

// One group (columns k .. k+31) of a weight row into the accumulator pair acc[0..1][MT].
template <int MT>
LS_AVX512 inline void group_512(__m512 (&acc)[2][MT], const int8_t* q, uint16_t s, const float* x, int64_t K, int64_t k) {
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(s));
  const __m512 w0 = w16_512(q + k, d), w1 = w16_512(q + k + 16, d);
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) {
    acc[0][m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * K + k), w0, acc[0][m]);
    acc[1][m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * K + k + 16), w1, acc[1][m]);
  }
}

// One weight row n against MT activation rows x[0..MT) (row stride K); writes y[m * N].
template <int MT>
LS_AVX512 void int8g_row_512(const Int8GArgs& a, int64_t n, const float* x, float* y) {
  constexpr int P = MT <= 2 ? 2 : 1;  // groups in flight
  const int64_t K = a.K, G = K / kGroup;
  const int8_t* q = a.q + n * K;
  const uint16_t* s = a.scales + n * G;
  __m512 acc[P][2][MT];
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m)
    for (int p = 0; p < P; ++p) acc[p][0][m] = acc[p][1][m] = _mm512_setzero_ps();
  int64_t gi = 0;
  for (; gi + P <= G; gi += P)
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) group_512<MT>(acc[p], q, s[gi + p], x, K, (gi + p) * kGroup);
  for (; gi < G; ++gi) group_512<MT>(acc[0], q, s[gi], x, K, gi * kGroup);
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) {
    __m512 t = _mm512_add_ps(acc[0][0][m], acc[0][1][m]);
    if constexpr (P == 2) t = _mm512_add_ps(t, _mm512_add_ps(acc[P - 1][0][m], acc[P - 1][1][m]));
    y[m * a.N] = _mm512_reduce_add_ps(t);
  }
}

LS_AVX512 void int8g_avx512(const Int8GArgs& a, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    prefetch_row(a, n + kPfRows);
    for (int64_t m0 = 0; m0 < a.M; m0 += 8) {
      const int64_t mt = std::min<int64_t>(8, a.M - m0);
      LS_CASES8(int8g_row_512, a, n, a.x + m0 * a.K, a.y + m0 * a.N + n)
    }
  }
}

// ---------------------------------------------------------------- AVX2: 8 columns per vector

LS_AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LS_AVX2 inline __m256 w8_256(const int8_t* q, __m256 d) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)))), d);
}

template <int MT>
LS_AVX2 inline void group_256(__m256 (&acc)[2][MT], const int8_t* q, uint16_t s, const float* x, int64_t K, int64_t k) {
  const __m256 d = _mm256_set1_ps(_cvtsh_ss(s));
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {  // columns k + 16h .. k + 16h + 15
    const __m256 w0 = w8_256(q + k + 16 * h, d), w1 = w8_256(q + k + 16 * h + 8, d);
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m) {
      acc[0][m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k + 16 * h), w0, acc[0][m]);
      acc[1][m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k + 16 * h + 8), w1, acc[1][m]);
    }
  }
}

template <int MT>
LS_AVX2 void int8g_row_256(const Int8GArgs& a, int64_t n, const float* x, float* y) {
  constexpr int P = MT <= 2 ? 2 : 1;  // groups in flight
  const int64_t K = a.K, G = K / kGroup;
  const int8_t* q = a.q + n * K;
  const uint16_t* s = a.scales + n * G;
  __m256 acc[P][2][MT];
#pragma GCC unroll 4
  for (int m = 0; m < MT; ++m)
    for (int p = 0; p < P; ++p) acc[p][0][m] = acc[p][1][m] = _mm256_setzero_ps();
  int64_t gi = 0;
  for (; gi + P <= G; gi += P)
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) group_256<MT>(acc[p], q, s[gi + p], x, K, (gi + p) * kGroup);
  for (; gi < G; ++gi) group_256<MT>(acc[0], q, s[gi], x, K, gi * kGroup);
#pragma GCC unroll 4
  for (int m = 0; m < MT; ++m) {
    __m256 t = _mm256_add_ps(acc[0][0][m], acc[0][1][m]);
    if constexpr (P == 2) t = _mm256_add_ps(t, _mm256_add_ps(acc[P - 1][0][m], acc[P - 1][1][m]));
    y[m * a.N] = hsum256(t);
  }
}

LS_AVX2 void int8g_avx2(const Int8GArgs& a, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    prefetch_row(a, n + kPfRows);
    for (int64_t m0 = 0; m0 < a.M; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, a.M - m0);
      switch (mt) {
        case 1: int8g_row_256<1>(a, n, a.x + m0 * a.K, a.y + m0 * a.N + n); break;
        case 2: int8g_row_256<2>(a, n, a.x + m0 * a.K, a.y + m0 * a.N + n); break;
        case 3: int8g_row_256<3>(a, n, a.x + m0 * a.K, a.y + m0 * a.N + n); break;
        default: int8g_row_256<4>(a, n, a.x + m0 * a.K, a.y + m0 * a.N + n); break;
      }
    }
  }
}

#endif  // LS_X86

using Kernel = void (*)(const Int8GArgs&, int64_t, int64_t);

Kernel pick() {
#if LS_X86
  const int64_t level = current_isa();
  if (level >= kIsaAvx512) return int8g_avx512;
  if (level >= kIsaAvx2) return int8g_avx2;
#endif
  return int8g_scalar;
}

// x [..., K] f32, q [N, K] i8, scales [N, K/32] f16 -> [..., N] f32.
at::Tensor int8g_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1 && x.device().is_cpu(),
              "llmspeed::int8g_linear: x must be a float32 CPU tensor [..., K], got ", x.scalar_type(), " ", x.sizes());
  const int64_t K = x.size(-1);
  TORCH_CHECK(K > 0 && K % kGroup == 0, "llmspeed::int8g_linear: K must be a positive multiple of 32, got ", K);
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == at::kChar && q.dim() == 2 && q.size(1) == K,
              "llmspeed::int8g_linear: q must be an int8 tensor [N, K] with K = ", K, ", got ", q.scalar_type(), " ",
              q.sizes());
  const int64_t N = q.size(0), G = K / kGroup;
  TORCH_CHECK(scales.device().is_cpu() && scales.scalar_type() == at::kHalf && scales.dim() == 2 &&
                  scales.size(0) == N && scales.size(1) == G,
              "llmspeed::int8g_linear: scales must be a float16 tensor [N, K/32] = [", N, ", ", G, "], got ",
              scales.scalar_type(), " ", scales.sizes());
  const at::Tensor x2 = x.reshape({-1, K}).contiguous(), qc = q.contiguous(), sc = scales.contiguous();
  const int64_t M = x2.size(0);
  std::vector<int64_t> ysz(x.sizes().begin(), x.sizes().end());
  ysz.back() = N;
  at::Tensor y = at::empty({M, N}, x.options());  // [M, N]
  if (M == 0 || N == 0) return y.view(ysz);
  const Int8GArgs a{x2.data_ptr<float>(), qc.data_ptr<int8_t>(), reinterpret_cast<const uint16_t*>(sc.data_ptr()),
                    y.data_ptr<float>(), M, N, K};
  const Kernel kernel = pick();
  // a chunk is worth >= ~64K weight-column x activation-row steps
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (K * M / 4 + K));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) { kernel(a, n0, n1); });
  return y.view(ysz);
}

}  // namespace
}  // namespace llmspeed

TORCH_LIBRARY_FRAGMENT(llmspeed, m) { m.def("int8g_linear(Tensor x, Tensor q, Tensor scales) -> Tensor"); }

TORCH_LIBRARY_IMPL(llmspeed, CPU, m) { m.impl("int8g_linear", &llmspeed::int8g_linear); }
