// 256-bit q8 tile kernels (8 weight rows per tile), int4 x int8 and int8 x int8: the 512-bit kernels' layout and
// maths (see lowbit_q8_tiles512.h) on ymm registers. Compiled once per instruction set: lowbit_q8_vnni256.cpp
// (AVX-VNNI), lowbit_q8_vnni256x.cpp (the same vpdpbusd ymm in its AVX512-VNNI + VL encoding) and
// lowbit_q8_avx2.cpp (AVX2 vpmaddubsw + vpmaddwd). The including file defines LS_Q8_T (target attribute),
// LS_Q8_VNNI (1 or 0) and, for VNNI, LS_Q8_DPBUSD (the vpdpbusd ymm intrinsic), and gets int4_q8_tiles /
// int8_q8_tiles in an anonymous namespace.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "lowbit.h"

#if !defined(LS_Q8_T) || !defined(LS_Q8_VNNI) || (LS_Q8_VNNI && !defined(LS_Q8_DPBUSD))
#error "define LS_Q8_T, LS_Q8_VNNI (and LS_Q8_DPBUSD) before including lowbit_q8_tiles256.h"
#endif

namespace llmspeed {
namespace {

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---------------------------------------------------------------- integer dot products of one 32-column block

// As in lowbit_q8_tiles512.h: int4 adds code x activation over the block to isum[c][m] (lane r = tile row r);
// int8 sets isum[m] to the block's sum of w x q (activations u8 q + 128 if kBiased, else int8 q).
struct Dot {
#if LS_Q8_VNNI
  static constexpr bool kBiased = true;
  template <int MT>
  static constexpr int chains() {
    return MT <= 2 ? 2 : 1;
  }
  template <int MT, int C>
  LS_Q8_T static void int4(__m256i (&isum)[C][MT], const __m256i v[4], const int8_t* q, int64_t K) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m256i wl = _mm256_and_si256(v[i], lo4), wh = _mm256_and_si256(_mm256_srli_epi32(v[i], 4), lo4);
#pragma GCC unroll 4
      for (int m = 0; m < MT; ++m) {
        const int8_t* p = q + m * K + 8 * i;
        isum[0][m] = LS_Q8_DPBUSD(isum[0][m], wl, _mm256_set1_epi32(load_i32(p)));
        isum[C - 1][m] = LS_Q8_DPBUSD(isum[C - 1][m], wh, _mm256_set1_epi32(load_i32(p + 4)));
      }
    }
  }
  template <int MT>  // u8 q + 128 x s8 w, minus 128 * (the row's weight sum), as the 512-bit kernel
  LS_Q8_T static void int8(__m256i (&isum)[MT], const __m256i v[8], const uint8_t* x, int64_t K32) {
    const __m256i ones = _mm256_set1_epi8(1);
    __m256i wsum = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      wsum = LS_Q8_DPBUSD(wsum, ones, v[i]);
#pragma GCC unroll 4
      for (int m = 0; m < MT; ++m)
        isum[m] = LS_Q8_DPBUSD(isum[m], _mm256_set1_epi32(load_i32(x + m * K32 + 4 * i)), v[i]);
    }
    const __m256i corr = _mm256_slli_epi32(wsum, 7);
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m) isum[m] = _mm256_sub_epi32(isum[m], corr);
  }
#else
  // No VNNI: vpmaddubsw + vpmaddwd by ones, with the 512-bit kernel's saturation-free bounds: int4 codes (0..15)
  // x |q| <= 127 -> 8 pairs per int16 lane <= 8 * 2 * 15 * 127 = 30480; int8 |w| <= 128 (u8) x sign-moved q ->
  // one pair <= 2 * 128 * 127 = 32512; both < 32767, so the sums are exact.
  static constexpr bool kBiased = false;
  template <int MT>
  static constexpr int chains() {
    return 1;
  }
  template <int MT, int C>
  LS_Q8_T static void int4(__m256i (&isum)[C][MT], const __m256i v[4], const int8_t* q, int64_t K) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F), ones16 = _mm256_set1_epi16(1);
    __m256i w[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
      w[2 * i] = _mm256_and_si256(v[i], lo4), w[2 * i + 1] = _mm256_and_si256(_mm256_srli_epi32(v[i], 4), lo4);
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m) {
      const int8_t* p = q + m * K;
      __m256i s0 = _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(load_i32(p)));
      __m256i s1 = _mm256_maddubs_epi16(w[1], _mm256_set1_epi32(load_i32(p + 4)));
#pragma GCC unroll 4
      for (int i = 1; i < 4; ++i) {
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(w[2 * i], _mm256_set1_epi32(load_i32(p + 8 * i))));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(w[2 * i + 1], _mm256_set1_epi32(load_i32(p + 8 * i + 4))));
      }
      isum[0][m] = _mm256_add_epi32(isum[0][m], _mm256_madd_epi16(_mm256_add_epi16(s0, s1), ones16));
    }
  }
  template <int MT>  // maddubs(|w|, sign(q, w)): vpsignb moves w's sign onto q (and zeroes q where w = 0)
  LS_Q8_T static void int8(__m256i (&isum)[MT], const __m256i v[8], const uint8_t* x, int64_t K32) {
    const __m256i ones16 = _mm256_set1_epi16(1);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m256i aw = _mm256_abs_epi8(v[i]);
#pragma GCC unroll 4
      for (int m = 0; m < MT; ++m) {
        const __m256i xb = _mm256_set1_epi32(load_i32(x + m * K32 + 4 * i));
        const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xb, v[i]));
        isum[m] = _mm256_add_epi32(isum[m], _mm256_madd_epi16(p, ones16));
      }
    }
  }
#endif
};

// ---------------------------------------------------------------- tiles

// 16 bytes at p, bytes >= `valid` read as 0 (no byte-masked loads before AVX-512).
LS_Q8_T inline __m128i load16(const void* p, int64_t valid) {
  if (valid >= 16) return _mm_loadu_si128(static_cast<const __m128i*>(p));
  alignas(16) uint8_t buf[16] = {};
  if (valid > 0) std::memcpy(buf, p, static_cast<size_t>(valid));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(buf));
}

// 8 rows of 4 dwords r[j] -> v[i] (i < 4): lane j = dword i of row j (4x4 dword transposes in each 128-bit lane).
LS_Q8_T inline void transpose8x4(const __m128i r[8], __m256i v[4]) {
  __m256i z[4];  // z[j] 128-bit lane b = row j + 4b
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) z[j] = _mm256_inserti128_si256(_mm256_castsi128_si256(r[j]), r[j + 4], 1);
  const __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
  v[0] = _mm256_unpacklo_epi64(t0, t2), v[1] = _mm256_unpackhi_epi64(t0, t2);
  v[2] = _mm256_unpacklo_epi64(t1, t3), v[3] = _mm256_unpackhi_epi64(t1, t3);
}

// 8 rows x 16 bytes at byte offset `off` (bytes >= `valid` read as 0) -> v[i] (i < 4): lane r = dword i of row r.
LS_Q8_T inline void transpose8x4(const void* const* rows, int64_t off, int64_t valid, __m256i v[4]) {
  __m128i r[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) r[j] = load16(static_cast<const int8_t*>(rows[j]) + off, valid);
  transpose8x4(r, v);
}

// Scales and mins of the tile's 8 rows (rows n[r]) -> sf, mf [G][8] float32: each row's (scale, min) f16 pairs of
// 4 groups form 4 dwords, transposed like the codes; groups beyond the last multiple of 4 one by one.
LS_Q8_T void tile_params(const Int4Q8Args& a, const int64_t* n, float* sf, float* mf) {
  const int64_t G = a.K / a.group;
  int64_t g0 = 0;
  for (; g0 + 4 <= G; g0 += 4) {
    __m128i sm[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r)
      sm[r] = _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.scales + n[r] * G + g0)),
                                 _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.mins + n[r] * G + g0)));
    __m256i v[4];
    transpose8x4(sm, v);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {  // v[i] lane r = (scale, min) of row r, group g0 + i
      const __m256i p = _mm256_packus_epi32(_mm256_and_si256(v[i], _mm256_set1_epi32(0xFFFF)), _mm256_srli_epi32(v[i], 16));
      const __m256i q = _mm256_permute4x64_epi64(p, 0xD8);  // [8 scales | 8 mins] f16
      _mm256_storeu_ps(sf + (g0 + i) * 8, _mm256_cvtph_ps(_mm256_castsi256_si128(q)));
      _mm256_storeu_ps(mf + (g0 + i) * 8, _mm256_cvtph_ps(_mm256_extracti128_si256(q, 1)));
    }
  }
  for (; g0 < G; ++g0)
    for (int r = 0; r < 8; ++r)
      sf[g0 * 8 + r] = _cvtsh_ss(a.scales[n[r] * G + g0]), mf[g0 * 8 + r] = _cvtsh_ss(a.mins[n[r] * G + g0]);
}

// The first `n` of 8 float32 lanes.
LS_Q8_T inline __m256i lanes_below(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// One tile of 8 weight rows (outputs y[m, t .. t + nkeep)) x MT activation rows from m0; sf, mf: tile_params.
template <int MT>
LS_Q8_T void tile4(const Int4Q8Args& a, const uint8_t* const* rows, const float* sf, const float* mf, int64_t t,
                   int nkeep, int64_t m0, const uint8_t* next) {
  const int64_t K = a.K, g = a.group, G = K / g;
  constexpr int C = Dot::chains<MT>();
  const int8_t* qx = a.qx + m0 * K;
  __m256 acc[MT];
#pragma GCC unroll 4
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    __m256i isum[C][MT];
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m) isum[0][m] = isum[C - 1][m] = _mm256_setzero_si256();
    for (int64_t kb = gi * g; kb < (gi + 1) * g; kb += 32) {
      __m256i v[4];
      transpose8x4(reinterpret_cast<const void* const*>(rows), kb / 2, 16, v);
      if (next != nullptr) {  // the next tile's codes (8 contiguous rows), 128 bytes per 32-column block, into L2
        _mm_prefetch(reinterpret_cast<const char*>(next + 4 * kb), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(next + 4 * kb + 64), _MM_HINT_T1);
      }
      Dot::int4<MT, C>(isum, v, qx + kb, K);
    }
    const __m256 sv = _mm256_loadu_ps(sf + gi * 8), mv = _mm256_loadu_ps(mf + gi * 8);
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m) {
      const int64_t i = (m0 + m) * G + gi;
      const __m256i is = C == 2 ? _mm256_add_epi32(isum[0][m], isum[C - 1][m]) : isum[0][m];
      const __m256 p = _mm256_mul_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(a.dx[i]));
      acc[m] = _mm256_fmadd_ps(mv, _mm256_set1_ps(a.xsum[i]), _mm256_fmadd_ps(p, sv, acc[m]));
    }
  }
  const __m256i keep = lanes_below(nkeep);
#pragma GCC unroll 4
  for (int m = 0; m < MT; ++m) _mm256_maskstore_ps(a.y + (m0 + m) * a.N + t, keep, acc[m]);
}

// One tile of 8 int8 weight rows x MT activation rows from m0.
template <int MT>
LS_Q8_T void tile8(const Int8Q8Args& a, const int8_t* const* rows, int64_t t, int nkeep, int64_t m0,
                   const int8_t* next) {
  const int64_t K = a.K, K32 = (K + 31) / 32 * 32, G = K32 / 32;
  const uint8_t* xq = a.xq + m0 * K32;
  __m256 acc[MT];
#pragma GCC unroll 4
  for (int m = 0; m < MT; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    const int64_t kb = 32 * gi;
    __m256i v[8];
    transpose8x4(reinterpret_cast<const void* const*>(rows), kb, K - kb, v);
    transpose8x4(reinterpret_cast<const void* const*>(rows), kb + 16, K - kb - 16, v + 4);
    if (next != nullptr)  // the next tile's weights (8 contiguous rows), 256 bytes per 32-column block, into L2
#pragma GCC unroll 4
      for (int l = 0; l < 4; ++l) _mm_prefetch(reinterpret_cast<const char*>(next + 8 * kb + 64 * l), _MM_HINT_T1);
    __m256i isum[MT];
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m) isum[m] = _mm256_setzero_si256();
    Dot::int8<MT>(isum, v, xq + kb, K32);
#pragma GCC unroll 4
    for (int m = 0; m < MT; ++m)
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[m]), _mm256_set1_ps(a.dx[(m0 + m) * G + gi]), acc[m]);
  }
  const __m256i keep = lanes_below(nkeep);
  const __m256 sc = _mm256_maskload_ps(a.scales + t, keep);
#pragma GCC unroll 4
  for (int m = 0; m < MT; ++m) _mm256_maskstore_ps(a.y + (m0 + m) * a.N + t, keep, _mm256_mul_ps(acc[m], sc));
}

#define LS_Q8_CASES4(F, ...)             \
  switch (mt) {                          \
    case 1: F<1>(__VA_ARGS__); break;    \
    case 2: F<2>(__VA_ARGS__); break;    \
    case 3: F<3>(__VA_ARGS__); break;    \
    default: F<4>(__VA_ARGS__); break;   \
  }

LS_Q8_T void int4_q8_tiles(const Int4Q8Args& a, int64_t n0, int64_t n1) {
  const int64_t G = a.K / a.group;
  std::vector<float> sf(static_cast<size_t>(G * 8)), mf(static_cast<size_t>(G * 8));  // [G][8]
  const uint8_t* rows[8];
  int64_t n[8];
  for (int64_t t = n0; t < n1; t += 8) {
    for (int r = 0; r < 8; ++r) n[r] = std::min(t + r, n1 - 1), rows[r] = a.codes + n[r] * (a.K / 2);  // tail: last row
    tile_params(a, n, sf.data(), mf.data());
    const int nkeep = static_cast<int>(std::min<int64_t>(8, n1 - t));
    const uint8_t* next = t + 16 <= n1 ? a.codes + (t + 8) * (a.K / 2) : nullptr;
    for (int64_t m0 = 0; m0 < a.M; m0 += 4) {  // 4 activation rows per pass: 16 ymm registers on AVX2
      const int64_t mt = std::min<int64_t>(4, a.M - m0);
      LS_Q8_CASES4(tile4, a, rows, sf.data(), mf.data(), t, nkeep, m0, m0 == 0 ? next : nullptr)
    }
  }
}

LS_Q8_T void int8_q8_tiles(const Int8Q8Args& a, int64_t n0, int64_t n1) {
  const int8_t* rows[8];
  for (int64_t t = n0; t < n1; t += 8) {
    for (int r = 0; r < 8; ++r) rows[r] = a.q + std::min(t + r, n1 - 1) * a.K;
    const int nkeep = static_cast<int>(std::min<int64_t>(8, n1 - t));
    const int8_t* next = t + 16 <= n1 ? a.q + (t + 8) * a.K : nullptr;
    for (int64_t m0 = 0; m0 < a.M; m0 += 4) {
      const int64_t mt = std::min<int64_t>(4, a.M - m0);
      LS_Q8_CASES4(tile8, a, rows, t, nkeep, m0, m0 == 0 ? next : nullptr)
    }
  }
}

}  // namespace
}  // namespace llmspeed
