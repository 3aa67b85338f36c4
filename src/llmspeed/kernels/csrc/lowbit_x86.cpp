// AVX-512 and AVX2+FMA kernels for llmspeed's low-bit linears. Each function carries its own target
// attribute, so one build (no -march) serves every x86-64 CPU; lowbit.cpp picks one at runtime.
//
// Linears: each 32 (AVX-512) or 16 (AVX2) weights of a row are decoded ONCE into registers as
// w = fma(u, scale, min) and applied to a tile of up to MT activation rows (MT accumulators pairs), so
// M rows cost one weight stream plus M FMAs per weight vector. Loads are unaligned throughout.
#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <vector>

namespace llmspeed {

#define LS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))
#define LS_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace {

// ---------------------------------------------------------------- AVX-512

// 16 code bytes -> codes of columns [0, 16) and [16, 32) as bytes (low nibble = even column).
LS_AVX512 inline void split_nibbles(__m128i b, __m128i& c0, __m128i& c1) {
  const __m128i m = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
  c0 = _mm_unpacklo_epi8(lo, hi);
  c1 = _mm_unpackhi_epi8(lo, hi);
}

LS_AVX512 inline __m512 u8_to_ps(__m128i c) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c)); }

// AVX-512 int4 decode without int->float conversions: per group the 16 possible weights
// T[i] = fma(i, scale, min) sit in one zmm, and vpermps picks w = T[u] using only the low 4 bits of each index.
// 16 code bytes widened to dwords give the even columns (low nibble) directly and the odd ones after a
// shift, so activations are pre-permuted once per call: within each 32-column block of a group, even
// columns first, then odd ones (a 16-column group tail likewise within its 16).
LS_AVX512 void permute_x(const float* x, int64_t M, int64_t K, int64_t g, float* xp) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g0 = 0; g0 < K; g0 += g)
      for (int64_t b = g0; b < g0 + g; b += 32) {
        const int64_t h = (g0 + g - b) >= 32 ? 16 : 8;  // half block
        for (int64_t i = 0; i < h; ++i) {
          xp[m * K + b + i] = x[m * K + b + 2 * i];
          xp[m * K + b + h + i] = x[m * K + b + 2 * i + 1];
        }
      }
}

// f16 scales/mins of one row -> f32 buffers (16 at a time, masked tail).
LS_AVX512 inline void row_params(const uint16_t* s, const uint16_t* mn, int64_t G, float* sf, float* mf) {
  for (int64_t i = 0; i < G; i += 16) {
    const __mmask16 k = static_cast<__mmask16>(G - i >= 16 ? 0xFFFF : (1u << (G - i)) - 1u);
    _mm512_mask_storeu_ps(sf + i, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, s + i)));
    _mm512_mask_storeu_ps(mf + i, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, mn + i)));
  }
}

// One weight row n against MT activation rows xp[0..MT) (permuted, row stride K); writes y[m * N].
// BPG > 0: group == 32 * BPG, a fixed, fully unrolled block count per group (no per-group loop control);
// BPG == 0: any group that is a multiple of 16.
template <int MT, int BPG>
LS_AVX512 void int4_row_512(const Int4Args& a, int64_t n, const float* xp, const float* sf, const float* mf, float* y) {
  const int64_t K = a.K, g = a.group, G = K / g;
  const uint8_t* c = a.codes + n * (K / 2);
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 acc0[MT], acc1[MT];
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
  if constexpr (BPG > 0) {
    for (int64_t gi = 0; gi < G; ++gi) {
      const __m512 t = _mm512_fmadd_ps(iota, _mm512_set1_ps(sf[gi]), _mm512_set1_ps(mf[gi]));  // T[u]
      const uint8_t* cb = c + gi * (16 * BPG);
      const float* xb = xp + gi * (32 * BPG);
#pragma GCC unroll 4
      for (int b = 0; b < BPG; ++b) {
        const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cb + 16 * b)));
        const __m512 w0 = _mm512_permutexvar_ps(d, t), w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), t);
#pragma GCC unroll 16
        for (int m = 0; m < MT; ++m) {
          acc0[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xb + m * K + 32 * b), w0, acc0[m]);
          acc1[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xb + m * K + 32 * b + 16), w1, acc1[m]);
        }
      }
    }
  }
  for (int64_t gi = 0; BPG == 0 && gi < G; ++gi) {
    const __m512 t = _mm512_fmadd_ps(iota, _mm512_set1_ps(sf[gi]), _mm512_set1_ps(mf[gi]));  // T[u]
    const int64_t k_end = (gi + 1) * g;
    int64_t k = gi * g;
    for (; k + 32 <= k_end; k += 32) {
      const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + k / 2)));
      const __m512 w0 = _mm512_permutexvar_ps(d, t);                         // columns k, k+2, .., k+30
      const __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), t);  // columns k+1, .., k+31
#pragma GCC unroll 16
      for (int m = 0; m < MT; ++m) {
        acc0[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xp + m * K + k), w0, acc0[m]);
        acc1[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xp + m * K + k + 16), w1, acc1[m]);
      }
    }
    if (k < k_end) {  // group % 32 == 16: one 16-column tail, [even 8 | odd 8]
      const __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + k / 2)));
      const __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(d), _mm256_srli_epi32(d, 4), 1);
      const __m512 w = _mm512_permutexvar_ps(idx, t);
#pragma GCC unroll 16
      for (int m = 0; m < MT; ++m) acc0[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xp + m * K + k), w, acc0[m]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m) y[m * a.N] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[m], acc1[m]));
}

template <int MT>
LS_AVX512 void int8_row_512(const Int8Args& a, int64_t n, const float* x, float* y) {
  const int64_t K = a.K;
  const int8_t* q = a.q + n * K;
  __m512 acc0[MT], acc1[MT];
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k))));
    const __m512 w1 =
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k + 16))));
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m) {
      acc0[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * K + k), w0, acc0[m]);
      acc1[m] = _mm512_fmadd_ps(_mm512_loadu_ps(x + m * K + k + 16), w1, acc1[m]);
    }
  }
  for (; k < K; k += 16) {  // masked tail (< 32 columns): masked loads never touch memory past the row
    const int64_t r = K - k < 16 ? K - k : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << r) - 1u);
    const __m512 w = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, q + k)));
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m) acc0[m] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + m * K + k), w, acc0[m]);
  }
  const float s = a.scales[n];
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m) y[m * a.N] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[m], acc1[m])) * s;
}

// ---------------------------------------------------------------- AVX2

LS_AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 8 code bytes -> 16 codes (bytes, column order) in one xmm.
LS_AVX2 inline __m128i nibbles16(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), m = _mm_set1_epi8(0x0F);
  return _mm_unpacklo_epi8(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
}

LS_AVX2 inline __m256 u8lo_to_ps(__m128i c) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)); }
LS_AVX2 inline __m256 u8hi_to_ps(__m128i c) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c, 8))); }

template <int MT>
LS_AVX2 void int4_row_256(const Int4Args& a, int64_t n, const float* x, float* y) {
  const int64_t K = a.K, g = a.group, G = K / g;
  const uint8_t* c = a.codes + n * (K / 2);
  const uint16_t* sr = a.scales + n * G;
  const uint16_t* mr = a.mins + n * G;
  __m256 acc0[MT], acc1[MT];
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = _mm256_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    const __m256 vs = _mm256_set1_ps(_cvtsh_ss(sr[gi])), vm = _mm256_set1_ps(_cvtsh_ss(mr[gi]));
    for (int64_t k = gi * g; k < (gi + 1) * g; k += 16) {
      const __m128i cc = nibbles16(c + k / 2);
      const __m256 w0 = _mm256_fmadd_ps(u8lo_to_ps(cc), vs, vm), w1 = _mm256_fmadd_ps(u8hi_to_ps(cc), vs, vm);
#pragma GCC unroll 8
      for (int m = 0; m < MT; ++m) {
        acc0[m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k), w0, acc0[m]);
        acc1[m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k + 8), w1, acc1[m]);
      }
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) y[m * a.N] = hsum256(_mm256_add_ps(acc0[m], acc1[m]));
}

template <int MT>
LS_AVX2 void int8_row_256(const Int8Args& a, int64_t n, const float* x, float* y) {
  const int64_t K = a.K;
  const int8_t* q = a.q + n * K;
  __m256 acc0[MT], acc1[MT];
  float tail[MT];
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) acc0[m] = acc1[m] = _mm256_setzero_ps(), tail[m] = 0.0f;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k));
    const __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    const __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m) {
      acc0[m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k), w0, acc0[m]);
      acc1[m] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k + 8), w1, acc1[m]);
    }
  }
  for (; k < K; ++k)  // scalar tail (< 16 columns)
    for (int m = 0; m < MT; ++m) tail[m] += x[m * K + k] * static_cast<float>(q[k]);
  const float s = a.scales[n];
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) y[m * a.N] = (hsum256(_mm256_add_ps(acc0[m], acc1[m])) + tail[m]) * s;
}

// ---------------------------------------------------------------- tiling over M

// Rows [n0, n1) x all M: activation rows in tiles of up to TMAX, weights decoded once per (row, tile).
template <int TMAX, typename Args, typename Row>
inline void tile_rows(const Args& a, int64_t n0, int64_t n1, const Row& row) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m0 = 0; m0 < a.M; m0 += TMAX) row(n, m0, a.M - m0 < TMAX ? a.M - m0 : TMAX);
}

#define LS_CASES4(F, ...)                \
  switch (mt) {                          \
    case 1: F<1>(__VA_ARGS__); break;    \
    case 2: F<2>(__VA_ARGS__); break;    \
    case 3: F<3>(__VA_ARGS__); break;    \
    default: F<4>(__VA_ARGS__); break;   \
  }

// bf16 bits of f32 with round-to-nearest-even (finite inputs), as torch's .to(torch.bfloat16).
LS_AVX512 inline __m256i to_bf16_512(__m512 w) {
  const __m512i b = _mm512_castps_si512(w);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  return _mm512_cvtepi32_epi16(r);
}

LS_AVX2 inline __m128i to_bf16_256(__m256 w) {
  const __m256i b = _mm256_castps_si256(w);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));  // r <= 0xFFFF: exact
}

}  // namespace

template <int BPG>
struct RowG {
  template <int MT>
  static void run(const Int4Args& a, int64_t n, const float* x, const float* sf, const float* mf, float* y) {
    int4_row_512<MT, BPG>(a, n, x, sf, mf, y);
  }
};
#define row_g(B) RowG<B>::template run

LS_AVX512 void int4_linear_avx512(const Int4Args& a, int64_t n0, int64_t n1) {
  const int64_t G = a.K / a.group;
  std::vector<float> xp(static_cast<size_t>(a.M * a.K)), sf(static_cast<size_t>(G)), mf(static_cast<size_t>(G));
  permute_x(a.x, a.M, a.K, a.group, xp.data());  // [M, K], once per thread: O(M K) next to O(chunk M K)
  int64_t last = -1;
  tile_rows<8>(a, n0, n1, [&](int64_t n, int64_t m0, int64_t mt) {
    if (n != last) row_params(a.scales + n * G, a.mins + n * G, G, sf.data(), mf.data()), last = n;
    const float* x = xp.data() + m0 * a.K;
    float* y = a.y + m0 * a.N + n;
    switch (a.group) {
      case 32: LS_CASES8(row_g(1), a, n, x, sf.data(), mf.data(), y) break;
      case 64: LS_CASES8(row_g(2), a, n, x, sf.data(), mf.data(), y) break;
      case 128: LS_CASES8(row_g(4), a, n, x, sf.data(), mf.data(), y) break;
      default: LS_CASES8(row_g(0), a, n, x, sf.data(), mf.data(), y)
    }
  });
}

LS_AVX512 void int8_linear_avx512(const Int8Args& a, int64_t n0, int64_t n1) {
  tile_rows<8>(a, n0, n1, [&](int64_t n, int64_t m0, int64_t mt) {
    LS_CASES8(int8_row_512, a, n, a.x + m0 * a.K, a.y + m0 * a.N + n)
  });
}

LS_AVX2 void int4_linear_avx2(const Int4Args& a, int64_t n0, int64_t n1) {
  tile_rows<4>(a, n0, n1, [&](int64_t n, int64_t m0, int64_t mt) {
    LS_CASES4(int4_row_256, a, n, a.x + m0 * a.K, a.y + m0 * a.N + n)
  });
}

LS_AVX2 void int8_linear_avx2(const Int8Args& a, int64_t n0, int64_t n1) {
  tile_rows<4>(a, n0, n1, [&](int64_t n, int64_t m0, int64_t mt) {
    LS_CASES4(int8_row_256, a, n, a.x + m0 * a.K, a.y + m0 * a.N + n)
  });
}

// Dequantize: u * s then + m as two rounded ops (the build uses -ffp-contract=off), bit-exact with the reference.
LS_AVX512 void int4_dequant_avx512(const DequantArgs& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, g = a.group, G = K / g;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* c = a.codes + n * (K / 2);
    for (int64_t gi = 0; gi < G; ++gi) {
      const __m512 vs = _mm512_set1_ps(_cvtsh_ss(a.scales[n * G + gi])), vm = _mm512_set1_ps(_cvtsh_ss(a.mins[n * G + gi]));
      for (int64_t k = gi * g; k < (gi + 1) * g; k += 16) {
        __m128i c0, c1;
        split_nibbles(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + k / 2)), c0, c1);
        const __m512 w = _mm512_add_ps(_mm512_mul_ps(u8_to_ps(c0), vs), vm);  // columns k .. k+15
        if (a.out_f32)
          _mm512_storeu_ps(a.out_f32 + n * K + k, w);
        else
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(a.out_bf16 + n * K + k), to_bf16_512(w));
      }
    }
  }
}

LS_AVX2 void int4_dequant_avx2(const DequantArgs& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, g = a.group, G = K / g;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* c = a.codes + n * (K / 2);
    for (int64_t gi = 0; gi < G; ++gi) {
      const __m256 vs = _mm256_set1_ps(_cvtsh_ss(a.scales[n * G + gi])), vm = _mm256_set1_ps(_cvtsh_ss(a.mins[n * G + gi]));
      for (int64_t k = gi * g; k < (gi + 1) * g; k += 16) {
        const __m128i cc = nibbles16(c + k / 2);
        const __m256 w0 = _mm256_add_ps(_mm256_mul_ps(u8lo_to_ps(cc), vs), vm);
        const __m256 w1 = _mm256_add_ps(_mm256_mul_ps(u8hi_to_ps(cc), vs), vm);
        if (a.out_f32) {
          _mm256_storeu_ps(a.out_f32 + n * K + k, w0);
          _mm256_storeu_ps(a.out_f32 + n * K + k + 8, w1);
        } else {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out_bf16 + n * K + k), to_bf16_256(w0));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(a.out_bf16 + n * K + k + 8), to_bf16_256(w1));
        }
      }
    }
  }
}

}  // namespace llmspeed
#endif  // x86
