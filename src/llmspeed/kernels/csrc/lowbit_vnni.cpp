// int4 x int8 ("q8") linear kernels with integer dot products, as llama.cpp's Q4_1 x Q8_1: AVX512-VNNI
// (vpdpbusd zmm, 16 weight rows per tile) and AVX-VNNI (vpdpbusd ymm, 8 rows per tile).
//
// Lanes are OUTPUT ROWS, not columns: for a tile of 16 weight rows and 32 columns, the 16 code bytes of each row
// are transposed so that v[i] lane r holds code dword i of row r (= the nibbles of columns 8i..8i+7). Its low
// nibbles are columns 8i, 8i+2, 8i+4, 8i+6 and its high nibbles 8i+1, .., 8i+7, so with the activations stored
// per 8 columns as [4 even | 4 odd] int8, one vpdpbusd with the activation dword broadcast from memory adds 4
// products to each of the 16 rows. The per-group epilogue (scale, dx, min, xsum) is then 4 vector ops for 16
// outputs, the unpacked weights are reused for every activation row of the M tile, and y is written 16 outputs
// at a time (masked for the tail) with no horizontal sums.
#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace llmspeed {

#define LS_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))
#define LS_VNNI256 __attribute__((target("avx2,avxvnni,fma,f16c")))

namespace {

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Per tile: rows[r] -> row pointers (tail rows repeat the last valid row), scales/mins transposed to [G][L].
template <int L>
void tile_setup(const Int4Q8Args& a, int64_t t, int64_t n1, const uint8_t** rows, uint16_t* st, uint16_t* mt) {
  const int64_t G = a.K / a.group;
  for (int r = 0; r < L; ++r) {
    const int64_t n = std::min(t + r, n1 - 1);
    rows[r] = a.codes + n * (a.K / 2);
    for (int64_t g = 0; g < G; ++g) st[g * L + r] = a.scales[n * G + g], mt[g * L + r] = a.mins[n * G + g];
  }
}

// ---------------------------------------------------------------- AVX512-VNNI

// z[j] (j < 4) with 128-bit lane b = row j + 4b (4 dwords) -> v[i]: lane r = dword i of row r (4x4 dword
// transposes inside each 128-bit lane).
LS_VNNI512 inline void transpose_lanes(const __m512i z[4], __m512i v[4]) {
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  v[0] = _mm512_unpacklo_epi64(t0, t2), v[1] = _mm512_unpackhi_epi64(t0, t2);
  v[2] = _mm512_unpacklo_epi64(t1, t3), v[3] = _mm512_unpackhi_epi64(t1, t3);
}

// 16 rows x 16 code bytes at byte offset `off` -> v[i] (i < 4): lane r = code dword i of row r.
LS_VNNI512 inline void transpose16x4(const uint8_t* const* rows, int64_t off, __m512i v[4]) {
  __m512i z[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m512i t = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j] + off)));
    t = _mm512_inserti32x4(t, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j + 4] + off)), 1);
    t = _mm512_inserti32x4(t, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j + 8] + off)), 2);
    z[j] = _mm512_inserti32x4(t, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j + 12] + off)), 3);
  }
  transpose_lanes(z, v);
}

// Scales and mins of the tile's 16 rows (rows n[r]) -> sf, mf [G][16] float32, 4 groups per transpose: each
// row's (scale, min) f16 pairs of 4 groups form 4 dwords, transposed like the codes.
LS_VNNI512 void tile_params_512(const Int4Q8Args& a, const int64_t* n, float* sf, float* mf) {
  const int64_t G = a.K / a.group;
  for (int64_t g0 = 0; g0 < G; g0 += 4) {
    const __mmask8 k = static_cast<__mmask8>(G - g0 >= 4 ? 0xF : (1u << (G - g0)) - 1u);
    __m128i sm[16];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r)
      sm[r] = _mm_unpacklo_epi16(_mm_maskz_loadu_epi16(k, a.scales + n[r] * G + g0),
                                 _mm_maskz_loadu_epi16(k, a.mins + n[r] * G + g0));  // (s, m) x 4 groups
    __m512i z[4], v[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      z[j] = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(sm[j]), sm[j + 4], 1),
                                                   sm[j + 8], 2), sm[j + 12], 3);
    transpose_lanes(z, v);
    for (int i = 0; i < 4 && g0 + i < G; ++i) {
      _mm512_storeu_ps(sf + (g0 + i) * 16, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v[i])));
      _mm512_storeu_ps(mf + (g0 + i) * 16, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v[i], 16))));
    }
  }
}

// One tile of 16 weight rows (outputs y[m, t .. t+16) under `keep`) x MT activation rows starting at m0.
template <int MT>
LS_VNNI512 void tile_512(const Int4Q8Args& a, const uint8_t* const* rows, const float* sf, const float* mf,
                         int64_t t, __mmask16 keep, int64_t m0, const uint8_t* next) {
  const int64_t K = a.K, g = a.group, G = K / g;
  const __m512i lo4 = _mm512_set1_epi8(0x0F);
  const int8_t* qx = a.qx + m0 * K;
  // Float accumulators: registers up to 8 activation rows, a stack buffer beyond (the 16 int32 partial sums
  // then keep the registers; one load + store per row and group is cheap next to its 8+ vpdpbusd).
  constexpr bool kMem = MT > 8;
  __m512 acc[kMem ? 1 : MT];
  alignas(64) float accm[kMem ? MT : 1][16];
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m)
    if constexpr (kMem)
      _mm512_store_ps(accm[m], _mm512_setzero_ps());
    else
      acc[m] = _mm512_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    // [16 rows] int32 per activation row; two chains (even / odd columns) when MT is too small to hide latency
    constexpr int C = MT <= 2 ? 2 : 1;
    __m512i isum[C][MT];
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m) isum[0][m] = isum[C - 1][m] = _mm512_setzero_si512();
    for (int64_t kb = gi * g; kb < (gi + 1) * g; kb += 32) {
      __m512i v[4];
      transpose16x4(rows, kb / 2, v);
      if (next != nullptr)  // the next tile's codes (16 contiguous rows), 256 bytes per 32-column block
#pragma GCC unroll 4
        for (int l = 0; l < 4; ++l) _mm_prefetch(reinterpret_cast<const char*>(next + 8 * kb + 64 * l), _MM_HINT_T0);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m512i wl = _mm512_and_si512(v[i], lo4), wh = _mm512_and_si512(_mm512_srli_epi32(v[i], 4), lo4);
#pragma GCC unroll 16
        for (int m = 0; m < MT; ++m) {
          const int8_t* q = qx + m * K + kb + 8 * i;
          isum[0][m] = _mm512_dpbusd_epi32(isum[0][m], wl, _mm512_set1_epi32(load_i32(q)));
          isum[C - 1][m] = _mm512_dpbusd_epi32(isum[C - 1][m], wh, _mm512_set1_epi32(load_i32(q + 4)));
        }
      }
    }
    const __m512 sv = _mm512_loadu_ps(sf + gi * 16), mv = _mm512_loadu_ps(mf + gi * 16);
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m) {
      const int64_t i = (m0 + m) * G + gi;
      const __m512i is = C == 2 ? _mm512_add_epi32(isum[0][m], isum[C - 1][m]) : isum[0][m];
      const __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(a.dx[i]));
      if constexpr (kMem)
        _mm512_store_ps(accm[m], _mm512_fmadd_ps(mv, _mm512_set1_ps(a.xsum[i]),
                                                 _mm512_fmadd_ps(p, sv, _mm512_load_ps(accm[m]))));
      else
        acc[m] = _mm512_fmadd_ps(mv, _mm512_set1_ps(a.xsum[i]), _mm512_fmadd_ps(p, sv, acc[m]));
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m)
    _mm512_mask_storeu_ps(a.y + (m0 + m) * a.N + t, keep, kMem ? _mm512_load_ps(accm[m]) : acc[m % (kMem ? 1 : MT)]);
}

// ---------------------------------------------------------------- AVX-VNNI (256-bit)

// 8 rows x 16 code bytes -> v[i] (i < 4): lane r = code dword i of row r.
LS_VNNI256 inline void transpose8x4(const uint8_t* const* rows, int64_t off, __m256i v[4]) {
  __m256i z[4];  // z[j] 128-bit lane b = row j + 4b
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j)
    z[j] = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j] + off))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[j + 4] + off)), 1);
  const __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
  v[0] = _mm256_unpacklo_epi64(t0, t2), v[1] = _mm256_unpackhi_epi64(t0, t2);
  v[2] = _mm256_unpacklo_epi64(t1, t3), v[3] = _mm256_unpackhi_epi64(t1, t3);
}

template <int MT>
LS_VNNI256 void tile_256(const Int4Q8Args& a, const uint8_t* const* rows, const uint16_t* st, const uint16_t* mt,
                         int64_t t, int nkeep, int64_t m0, const uint8_t* next) {
  const int64_t K = a.K, g = a.group, G = K / g;
  const __m256i lo4 = _mm256_set1_epi8(0x0F);
  const int8_t* qx = a.qx + m0 * K;
  __m256 acc[MT];
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    __m256i isum[MT];
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m) isum[m] = _mm256_setzero_si256();
    for (int64_t kb = gi * g; kb < (gi + 1) * g; kb += 32) {
      __m256i v[4];
      transpose8x4(rows, kb / 2, v);
      if (next != nullptr)  // the next tile's codes (8 contiguous rows), 128 bytes per 32-column block
        _mm_prefetch(reinterpret_cast<const char*>(next + 4 * kb), _MM_HINT_T0),
            _mm_prefetch(reinterpret_cast<const char*>(next + 4 * kb + 64), _MM_HINT_T0);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m256i wl = _mm256_and_si256(v[i], lo4), wh = _mm256_and_si256(_mm256_srli_epi32(v[i], 4), lo4);
#pragma GCC unroll 8
        for (int m = 0; m < MT; ++m) {
          const int8_t* q = qx + m * K + kb + 8 * i;
          isum[m] = _mm256_dpbusd_avx_epi32(isum[m], wl, _mm256_set1_epi32(load_i32(q)));
          isum[m] = _mm256_dpbusd_avx_epi32(isum[m], wh, _mm256_set1_epi32(load_i32(q + 4)));
        }
      }
    }
    const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(st + gi * 8)));
    const __m256 mv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mt + gi * 8)));
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m) {
      const int64_t i = (m0 + m) * G + gi;
      const __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(isum[m]), _mm256_set1_ps(a.dx[i]));
      acc[m] = _mm256_fmadd_ps(mv, _mm256_set1_ps(a.xsum[i]), _mm256_fmadd_ps(p, sv, acc[m]));
    }
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(nkeep), lane);
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) _mm256_maskstore_ps(a.y + (m0 + m) * a.N + t, keep, acc[m]);
}

#define LS_Q8_CASES16(F, ...)                                    \
  if (mt <= 8) {                                                 \
    LS_CASES8(F, __VA_ARGS__)                                  \
  } else {                                                       \
    switch (mt) {                                                \
      case 9: F<9>(__VA_ARGS__); break;                          \
      case 10: F<10>(__VA_ARGS__); break;                        \
      case 11: F<11>(__VA_ARGS__); break;                        \
      case 12: F<12>(__VA_ARGS__); break;                        \
      case 13: F<13>(__VA_ARGS__); break;                        \
      case 14: F<14>(__VA_ARGS__); break;                        \
      case 15: F<15>(__VA_ARGS__); break;                        \
      default: F<16>(__VA_ARGS__); break;                        \
    }                                                            \
  }

}  // namespace

LS_VNNI512 void int4_q8_vnni512(const Int4Q8Args& a, int64_t n0, int64_t n1) {
  const int64_t G = a.K / a.group;
  std::vector<float> sf(static_cast<size_t>(G * 16)), mf(static_cast<size_t>(G * 16));  // [G][16]
  const uint8_t* rows[16];
  int64_t n[16];
  for (int64_t t = n0; t < n1; t += 16) {
    for (int r = 0; r < 16; ++r) n[r] = std::min(t + r, n1 - 1), rows[r] = a.codes + n[r] * (a.K / 2);
    tile_params_512(a, n, sf.data(), mf.data());
    // Software prefetch of the next tile: its codes (in the first M pass) and its scales and mins (here). The
    // codes of 16 rows are one contiguous block read 16 bytes per row at a time, which the hardware
    // prefetchers follow poorly.
    const bool more = t + 32 <= n1;
    const uint8_t* next = more ? a.codes + (t + 16) * (a.K / 2) : nullptr;
    for (int64_t b = 0; more && b < 32 * G; b += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(a.scales + (t + 16) * G) + b, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(a.mins + (t + 16) * G) + b, _MM_HINT_T0);
    }
    const __mmask16 keep = static_cast<__mmask16>(n1 - t >= 16 ? 0xFFFF : (1u << (n1 - t)) - 1u);
    for (int64_t m0 = 0; m0 < a.M; m0 += 16) {
      const int64_t mt = std::min<int64_t>(16, a.M - m0);
      LS_Q8_CASES16(tile_512, a, rows, sf.data(), mf.data(), t, keep, m0, m0 == 0 ? next : nullptr)
    }
  }
}

LS_VNNI256 void int4_q8_vnni256(const Int4Q8Args& a, int64_t n0, int64_t n1) {
  const int64_t G = a.K / a.group;
  std::vector<uint16_t> st(static_cast<size_t>(G * 8)), mt_(static_cast<size_t>(G * 8));  // [G][8]
  const uint8_t* rows[8];
  for (int64_t t = n0; t < n1; t += 8) {
    tile_setup<8>(a, t, n1, rows, st.data(), mt_.data());
    const int nkeep = static_cast<int>(std::min<int64_t>(8, n1 - t));
    const uint8_t* next = t + 16 <= n1 ? a.codes + (t + 8) * (a.K / 2) : nullptr;
    for (int64_t m0 = 0; m0 < a.M; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, a.M - m0);
      LS_CASES8(tile_256, a, rows, st.data(), mt_.data(), t, nkeep, m0, m0 == 0 ? next : nullptr)
    }
  }
}

// Per (row, group): dx = max|x| / 127, q = round-half-even(x * (1 / dx)) (0 if dx == 0), xsum = dx * sum q; each 8
// columns stored as [4 even | 4 odd]. Same float ops as the portable version (so qx, dx are bit-identical).
LS_VNNI512 void quantize_q8_avx512(const float* x, int64_t M, int64_t K, int64_t group, int8_t* qx, float* dx,
                                   float* xsum, bool interleave) {
  const int64_t G = K / group;
  const __m128i perm = interleave ? _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15)
                                  : _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t gi = 0; gi < G; ++gi) {
      const float* xg = x + m * K + gi * group;
      __m512 amax = _mm512_setzero_ps();
      for (int64_t k = 0; k < group; k += 16) amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(xg + k)));
      const float d = _mm512_reduce_max_ps(amax) / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
      const __m512 vi = _mm512_set1_ps(inv);
      __m512i isum = _mm512_setzero_si512();
      for (int64_t k = 0; k < group; k += 16) {
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xg + k), vi));  // nearest-even (MXCSR)
        q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
        isum = _mm512_add_epi32(isum, q);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qx + m * K + gi * group + k),
                         _mm_shuffle_epi8(_mm512_cvtepi32_epi8(q), perm));
      }
      // xsum of the ROUNDED activations (see quantize_q8_portable): exact integer sum, one multiply
      dx[m * G + gi] = d, xsum[m * G + gi] = d * static_cast<float>(_mm512_reduce_add_epi32(isum));
    }
}

}  // namespace llmspeed
#endif  // x86
