// int8 x int8 ("q8") linear kernel with AVX512-VNNI, the int8 counterpart of lowbit_vnni.cpp: lanes are 16
// output rows; the weight bytes of each row (16 columns at a time) are transposed so that v[i] lane r holds
// columns 4i..4i+3 of row r, and one vpdpbusd with an activation dword broadcast from memory adds 4 products
// to each row. vpdpbusd multiplies unsigned by signed bytes, so the activations are stored as q + 128 (u8) and
// 128 * (sum of the block's weights) is subtracted per block (computed once per tile with a vpdpbusd by ones).
#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace llmspeed {

#define LS_VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")))

namespace {

inline int32_t load_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// 16 rows x (up to) 16 weight bytes at `off` (bytes >= `valid` read as 0) -> v[i]: lane r = dword i of row r.
LS_VNNI512 inline void transpose16x4_i8(const int8_t* const* rows, int64_t off, int64_t valid, __m512i v[4]) {
  const __mmask16 k = static_cast<__mmask16>(valid >= 16 ? 0xFFFF : (1u << valid) - 1u);
  __m512i z[4];  // z[j] 128-bit lane b = row j + 4b
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m512i t = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(k, rows[j] + off));
    t = _mm512_inserti32x4(t, _mm_maskz_loadu_epi8(k, rows[j + 4] + off), 1);
    t = _mm512_inserti32x4(t, _mm_maskz_loadu_epi8(k, rows[j + 8] + off), 2);
    z[j] = _mm512_inserti32x4(t, _mm_maskz_loadu_epi8(k, rows[j + 12] + off), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  v[0] = _mm512_unpacklo_epi64(t0, t2), v[1] = _mm512_unpackhi_epi64(t0, t2);
  v[2] = _mm512_unpacklo_epi64(t1, t3), v[3] = _mm512_unpackhi_epi64(t1, t3);
}

template <int MT>
LS_VNNI512 void tile8_512(const Int8Q8Args& a, const int8_t* const* rows, int64_t t, __mmask16 keep, int64_t m0,
                          const int8_t* next) {
  const int64_t K = a.K, K32 = (K + 31) / 32 * 32, G = K32 / 32;
  const __m512i ones = _mm512_set1_epi8(1);
  const uint8_t* xq = a.xq + m0 * K32;
  __m512 acc[MT];
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    const int64_t kb = 32 * gi;
    __m512i v[2][4];
    transpose16x4_i8(rows, kb, K - kb, v[0]);
    if (K - kb > 16)
      transpose16x4_i8(rows, kb + 16, K - kb - 16, v[1]);
    else
      v[1][0] = v[1][1] = v[1][2] = v[1][3] = _mm512_setzero_si512();
    if (next != nullptr)  // the next tile's weights (16 contiguous rows), 512 bytes per 32-column block
#pragma GCC unroll 8
      for (int l = 0; l < 8; ++l) _mm_prefetch(reinterpret_cast<const char*>(next + 16 * kb + 64 * l), _MM_HINT_T0);
    __m512i wsum = _mm512_setzero_si512(), isum[MT];
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m) isum[m] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m512i w = v[i / 4][i % 4];
      wsum = _mm512_dpbusd_epi32(wsum, ones, w);
#pragma GCC unroll 16
      for (int m = 0; m < MT; ++m)
        isum[m] = _mm512_dpbusd_epi32(isum[m], _mm512_set1_epi32(load_u32(xq + m * K32 + kb + 4 * i)), w);
    }
    const __m512i corr = _mm512_slli_epi32(wsum, 7);  // 128 * sum of the block's weights, per row
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m)
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(isum[m], corr)),
                               _mm512_set1_ps(a.dx[(m0 + m) * G + gi]), acc[m]);
  }
  const __m512 sc = _mm512_maskz_loadu_ps(keep, a.scales + t);
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m) _mm512_mask_storeu_ps(a.y + (m0 + m) * a.N + t, keep, _mm512_mul_ps(acc[m], sc));
}

}  // namespace

LS_VNNI512 void int8_q8_vnni512(const Int8Q8Args& a, int64_t n0, int64_t n1) {
  const int8_t* rows[16];
  for (int64_t t = n0; t < n1; t += 16) {
    for (int r = 0; r < 16; ++r) rows[r] = a.q + std::min(t + r, n1 - 1) * a.K;
    const __mmask16 keep = static_cast<__mmask16>(n1 - t >= 16 ? 0xFFFF : (1u << (n1 - t)) - 1u);
    const int8_t* next = t + 32 <= n1 ? a.q + (t + 16) * a.K : nullptr;
    for (int64_t m0 = 0; m0 < a.M; m0 += 8) {
      const int64_t mt = std::min<int64_t>(8, a.M - m0);
      const int8_t* nx = m0 == 0 ? next : nullptr;
      switch (mt) {
        case 1: tile8_512<1>(a, rows, t, keep, m0, nx); break;
        case 2: tile8_512<2>(a, rows, t, keep, m0, nx); break;
        case 3: tile8_512<3>(a, rows, t, keep, m0, nx); break;
        case 4: tile8_512<4>(a, rows, t, keep, m0, nx); break;
        case 5: tile8_512<5>(a, rows, t, keep, m0, nx); break;
        case 6: tile8_512<6>(a, rows, t, keep, m0, nx); break;
        case 7: tile8_512<7>(a, rows, t, keep, m0, nx); break;
        default: tile8_512<8>(a, rows, t, keep, m0, nx); break;
      }
    }
  }
}

}  // namespace llmspeed
#endif  // x86
