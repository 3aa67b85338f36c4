// 512-bit q8 tile kernels (16 weight rows per tile), int4 x int8 and int8 x int8, compiled once per instruction
// set: lowbit_q8_vnni512.cpp (AVX512-VNNI vpdpbusd) and lowbit_q8_avx512.cpp (AVX-512 BW vpmaddubsw + vpmaddwd).
// The including file defines LS_Q8_T (the target attribute of every function here) and LS_Q8_VNNI (1 or 0), and
// gets int4_q8_tiles / int8_q8_tiles. Everything is in an anonymous namespace, so the differently-targeted copies
// stay local to their translation unit (no link-time merging of, e.g., an AVX-512 copy into an AVX2 caller).
//
// Lanes are OUTPUT ROWS, not columns (as llama.cpp's Q4_1 x Q8_1 maths, another layout): for a tile of 16 weight
// rows and 32 columns, the code bytes of each row are transposed so that v[i] lane r holds code dword i of row r
// (int4: the nibbles of columns 8i..8i+7; int8: the weights of columns 4i..4i+3). int4: the low nibbles of a dword
// are columns 8i, 8i+2, 8i+4, 8i+6 and its high nibbles 8i+1, .., 8i+7, so with the activations stored per 8
// columns as [4 even | 4 odd] int8, one 4-byte dot product per lane with the activation dword broadcast from
// memory adds 4 products to each of the 16 rows. The per-group epilogue (scale, dx, min, xsum) is then a few
// vector ops for 16 outputs, the unpacked weights are reused for every activation row of the M tile, and y is
// written 16 outputs at a time (masked for the tail) with no horizontal sums.
//
// Software prefetch: the next tile's weights stream in while this tile computes, into L2 (prefetcht1), not L1:
// measured on Zen 4 with weights from DRAM at M = 1, prefetcht0 made the int8 tiles ~2x and the int4 ones ~1.3x
// slower (a whole next tile in flight towards the 32 KiB L1 competes with the current one).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "lowbit.h"

#if !defined(LS_Q8_T) || !defined(LS_Q8_VNNI)
#error "define LS_Q8_T and LS_Q8_VNNI before including lowbit_q8_tiles512.h"
#endif

namespace llmspeed {
namespace {

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---------------------------------------------------------------- integer dot products of one 32-column block

// int4(isum, v, q, K): isum[c][m] lane r += sum over the block's 32 columns of code(r) x activation(m), where q +
// m K are row m's 32 activations; the C chains are summed by the caller. int8(isum, v, x, K32): isum[m] lane r =
// sum over the block of w(r) x q(m), x + m K32 = row m's 32 activations (u8 q + 128 if kBiased, else int8 q).
struct Dot {
#if LS_Q8_VNNI
  static constexpr bool kBiased = true;
  template <int MT>
  static constexpr int chains() {  // two chains (even / odd columns) when MT is too small to hide latency
    return MT <= 2 ? 2 : 1;
  }
  template <int MT, int C>
  LS_Q8_T static void int4(__m512i (&isum)[C][MT], const __m512i v[4], const int8_t* q, int64_t K) {
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m512i wl = _mm512_and_si512(v[i], lo4), wh = _mm512_and_si512(_mm512_srli_epi32(v[i], 4), lo4);
#pragma GCC unroll 16
      for (int m = 0; m < MT; ++m) {
        const int8_t* p = q + m * K + 8 * i;
        isum[0][m] = _mm512_dpbusd_epi32(isum[0][m], wl, _mm512_set1_epi32(load_i32(p)));
        isum[C - 1][m] = _mm512_dpbusd_epi32(isum[C - 1][m], wh, _mm512_set1_epi32(load_i32(p + 4)));
      }
    }
  }
  // vpdpbusd multiplies unsigned by signed bytes: activations u8 q + 128, then 128 * (sum of the row's weights
  // in the block, a vpdpbusd by ones) is subtracted.
  template <int MT>
  LS_Q8_T static void int8(__m512i (&isum)[MT], const __m512i v[8], const uint8_t* x, int64_t K32) {
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i wsum = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      wsum = _mm512_dpbusd_epi32(wsum, ones, v[i]);
#pragma GCC unroll 8
      for (int m = 0; m < MT; ++m)
        isum[m] = _mm512_dpbusd_epi32(isum[m], _mm512_set1_epi32(load_i32(x + m * K32 + 4 * i)), v[i]);
    }
    const __m512i corr = _mm512_slli_epi32(wsum, 7);
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m) isum[m] = _mm512_sub_epi32(isum[m], corr);
  }
#else
  // No VNNI: vpmaddubsw (u8 x s8 -> int16 pair sums, SATURATING) then vpmaddwd by ones (int16 pairs -> int32).
  // Both schemes below keep every int16 within +-32767, so nothing saturates and the sums are exact.
  static constexpr bool kBiased = false;
  template <int MT>
  static constexpr int chains() {
    return 1;
  }
  // int4: u8 codes (0..15) x s8 activations (|q| <= 127): a pair is <= 2 * 15 * 127 = 3810 in magnitude, so the
  // 8 pairs an int16 lane collects over the block (16 products) stay <= 30480 < 32767; one vpmaddwd per block.
  template <int MT, int C>
  LS_Q8_T static void int4(__m512i (&isum)[C][MT], const __m512i v[4], const int8_t* q, int64_t K) {
    const __m512i lo4 = _mm512_set1_epi8(0x0F), ones16 = _mm512_set1_epi16(1);
    __m512i w[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
      w[2 * i] = _mm512_and_si512(v[i], lo4), w[2 * i + 1] = _mm512_and_si512(_mm512_srli_epi32(v[i], 4), lo4);
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m) {
      const int8_t* p = q + m * K;
      __m512i s0 = _mm512_maddubs_epi16(w[0], _mm512_set1_epi32(load_i32(p)));
      __m512i s1 = _mm512_maddubs_epi16(w[1], _mm512_set1_epi32(load_i32(p + 4)));
#pragma GCC unroll 4
      for (int i = 1; i < 4; ++i) {
        s0 = _mm512_add_epi16(s0, _mm512_maddubs_epi16(w[2 * i], _mm512_set1_epi32(load_i32(p + 8 * i))));
        s1 = _mm512_add_epi16(s1, _mm512_maddubs_epi16(w[2 * i + 1], _mm512_set1_epi32(load_i32(p + 8 * i + 4))));
      }
      isum[0][m] = _mm512_add_epi32(isum[0][m], _mm512_madd_epi16(_mm512_add_epi16(s0, s1), ones16));
    }
  }
  // int8 (llama.cpp's sign trick): the unsigned operand is |w| (<= 128, exact as u8 even for w = -128), the
  // signed one the int8 activation with w's sign moved onto it (|q| <= 127, so negating cannot overflow): a pair
  // is <= 2 * 128 * 127 = 32512 <= 32767, one vpmaddwd per pair. AVX-512 has no vpsignb: masked negate instead
  // (w = 0 contributes |w| = 0 either way).
  template <int MT>
  LS_Q8_T static void int8(__m512i (&isum)[MT], const __m512i v[8], const uint8_t* x, int64_t K32) {
    const __m512i zero = _mm512_setzero_si512(), ones16 = _mm512_set1_epi16(1);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m512i aw = _mm512_abs_epi8(v[i]);
      const __mmask64 neg = _mm512_movepi8_mask(v[i]);
#pragma GCC unroll 8
      for (int m = 0; m < MT; ++m) {
        const __m512i xb = _mm512_set1_epi32(load_i32(x + m * K32 + 4 * i));
        const __m512i p = _mm512_maddubs_epi16(aw, _mm512_mask_sub_epi8(xb, neg, zero, xb));
        isum[m] = _mm512_add_epi32(isum[m], _mm512_madd_epi16(p, ones16));
      }
    }
  }
#endif
};

// ---------------------------------------------------------------- int4 x int8

// z[j] (j < 4) with 128-bit lane b = row j + 4b (4 dwords) -> v[i]: lane r = dword i of row r (4x4 dword
// transposes inside each 128-bit lane).
LS_Q8_T inline void transpose_lanes(const __m512i z[4], __m512i v[4]) {
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  v[0] = _mm512_unpacklo_epi64(t0, t2), v[1] = _mm512_unpackhi_epi64(t0, t2);
  v[2] = _mm512_unpacklo_epi64(t1, t3), v[3] = _mm512_unpackhi_epi64(t1, t3);
}

// 16 rows x 16 bytes at byte offset `off` (bytes >= `valid` read as 0) -> v[i] (i < 4): lane r = dword i of row r.
LS_Q8_T inline void transpose16x4(const void* const* rows, int64_t off, int64_t valid, __m512i v[4]) {
  const __mmask16 k = static_cast<__mmask16>(valid >= 16 ? 0xFFFF : valid <= 0 ? 0 : (1u << valid) - 1u);
  const auto row = [&](int j) { return static_cast<const int8_t*>(rows[j]) + off; };
  __m512i z[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m512i t = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(k, row(j)));
    t = _mm512_inserti32x4(t, _mm_maskz_loadu_epi8(k, row(j + 4)), 1);
    t = _mm512_inserti32x4(t, _mm_maskz_loadu_epi8(k, row(j + 8)), 2);
    z[j] = _mm512_inserti32x4(t, _mm_maskz_loadu_epi8(k, row(j + 12)), 3);
  }
  transpose_lanes(z, v);
}

// Scales and mins of the tile's 16 rows (rows n[r]) -> sf, mf [G][16] float32, 4 groups per transpose: each
// row's (scale, min) f16 pairs of 4 groups form 4 dwords, transposed like the codes.
LS_Q8_T void tile_params(const Int4Q8Args& a, const int64_t* n, float* sf, float* mf) {
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
LS_Q8_T void tile4(const Int4Q8Args& a, const uint8_t* const* rows, const float* sf, const float* mf, int64_t t,
                   __mmask16 keep, int64_t m0, const uint8_t* next) {
  const int64_t K = a.K, g = a.group, G = K / g;
  const int8_t* qx = a.qx + m0 * K;
  // Float accumulators: registers up to 8 activation rows, a stack buffer beyond (the 16 int32 partial sums
  // then keep the registers; one load + store per row and group is cheap next to its 8+ dot products).
  constexpr bool kMem = MT > 8;
  constexpr int C = Dot::chains<MT>();
  __m512 acc[kMem ? 1 : MT];
  alignas(64) float accm[kMem ? MT : 1][16];
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m)
    if constexpr (kMem)
      _mm512_store_ps(accm[m], _mm512_setzero_ps());
    else
      acc[m] = _mm512_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    __m512i isum[C][MT];  // [16 rows] int32 per activation row and chain
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m) isum[0][m] = isum[C - 1][m] = _mm512_setzero_si512();
    for (int64_t kb = gi * g; kb < (gi + 1) * g; kb += 32) {
      __m512i v[4];
      transpose16x4(reinterpret_cast<const void* const*>(rows), kb / 2, 16, v);
      if (next != nullptr)  // the next tile's codes (16 contiguous rows), 256 bytes per 32-column block
#pragma GCC unroll 4
        for (int l = 0; l < 4; ++l) _mm_prefetch(reinterpret_cast<const char*>(next + 8 * kb + 64 * l), _MM_HINT_T1);
      Dot::int4<MT, C>(isum, v, qx + kb, K);
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

#define LS_Q8_CASES16(F, ...)                \
  if (mt <= 8) {                             \
    LS_CASES8(F, __VA_ARGS__)                \
  } else {                                   \
    switch (mt) {                            \
      case 9: F<9>(__VA_ARGS__); break;      \
      case 10: F<10>(__VA_ARGS__); break;    \
      case 11: F<11>(__VA_ARGS__); break;    \
      case 12: F<12>(__VA_ARGS__); break;    \
      case 13: F<13>(__VA_ARGS__); break;    \
      case 14: F<14>(__VA_ARGS__); break;    \
      case 15: F<15>(__VA_ARGS__); break;    \
      default: F<16>(__VA_ARGS__); break;    \
    }                                        \
  }

LS_Q8_T void int4_q8_tiles(const Int4Q8Args& a, int64_t n0, int64_t n1) {
  const int64_t G = a.K / a.group;
  std::vector<float> sf(static_cast<size_t>(G * 16)), mf(static_cast<size_t>(G * 16));  // [G][16]
  const uint8_t* rows[16];
  int64_t n[16];
  for (int64_t t = n0; t < n1; t += 16) {
    for (int r = 0; r < 16; ++r) n[r] = std::min(t + r, n1 - 1), rows[r] = a.codes + n[r] * (a.K / 2);
    tile_params(a, n, sf.data(), mf.data());
    // Software prefetch of the next tile: its codes (in the first M pass) and its scales and mins (here). The
    // codes of 16 rows are one contiguous block read 16 bytes per row at a time, which the hardware
    // prefetchers follow poorly.
    const bool more = t + 32 <= n1;
    const uint8_t* next = more ? a.codes + (t + 16) * (a.K / 2) : nullptr;
    for (int64_t b = 0; more && b < 32 * G; b += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(a.scales + (t + 16) * G) + b, _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(a.mins + (t + 16) * G) + b, _MM_HINT_T1);
    }
    const __mmask16 keep = static_cast<__mmask16>(n1 - t >= 16 ? 0xFFFF : (1u << (n1 - t)) - 1u);
    for (int64_t m0 = 0; m0 < a.M; m0 += 16) {
      const int64_t mt = std::min<int64_t>(16, a.M - m0);
      LS_Q8_CASES16(tile4, a, rows, sf.data(), mf.data(), t, keep, m0, m0 == 0 ? next : nullptr)
    }
  }
}

// ---------------------------------------------------------------- int8 x int8

template <int MT>
LS_Q8_T void tile8(const Int8Q8Args& a, const int8_t* const* rows, int64_t t, __mmask16 keep, int64_t m0,
                   const int8_t* next) {
  const int64_t K = a.K, K32 = (K + 31) / 32 * 32, G = K32 / 32;
  const uint8_t* xq = a.xq + m0 * K32;
  __m512 acc[MT];
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    const int64_t kb = 32 * gi;
    __m512i v[8];
    transpose16x4(reinterpret_cast<const void* const*>(rows), kb, K - kb, v);
    transpose16x4(reinterpret_cast<const void* const*>(rows), kb + 16, K - kb - 16, v + 4);
    if (next != nullptr)  // the next tile's weights (16 contiguous rows), 512 bytes per 32-column block
#pragma GCC unroll 8
      for (int l = 0; l < 8; ++l) _mm_prefetch(reinterpret_cast<const char*>(next + 16 * kb + 64 * l), _MM_HINT_T1);
    __m512i isum[MT];
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m) isum[m] = _mm512_setzero_si512();
    Dot::int8<MT>(isum, v, xq + kb, K32);
#pragma GCC unroll 8
    for (int m = 0; m < MT; ++m)
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[m]), _mm512_set1_ps(a.dx[(m0 + m) * G + gi]), acc[m]);
  }
  const __m512 sc = _mm512_maskz_loadu_ps(keep, a.scales + t);
#pragma GCC unroll 8
  for (int m = 0; m < MT; ++m) _mm512_mask_storeu_ps(a.y + (m0 + m) * a.N + t, keep, _mm512_mul_ps(acc[m], sc));
}

LS_Q8_T void int8_q8_tiles(const Int8Q8Args& a, int64_t n0, int64_t n1) {
  const int8_t* rows[16];
  for (int64_t t = n0; t < n1; t += 16) {
    for (int r = 0; r < 16; ++r) rows[r] = a.q + std::min(t + r, n1 - 1) * a.K;
    const __mmask16 keep = static_cast<__mmask16>(n1 - t >= 16 ? 0xFFFF : (1u << (n1 - t)) - 1u);
    const int8_t* next = t + 32 <= n1 ? a.q + (t + 16) * a.K : nullptr;
    for (int64_t m0 = 0; m0 < a.M; m0 += 8) {
      const int64_t mt = std::min<int64_t>(8, a.M - m0);
      LS_CASES8(tile8, a, rows, t, keep, m0, m0 == 0 ? next : nullptr)
    }
  }
}

}  // namespace
}  // namespace llmspeed
