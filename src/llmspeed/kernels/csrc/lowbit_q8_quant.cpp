// Activation rounding of the q8 kernels, AVX-512 and AVX2 versions of lowbit_q8.cpp's quantize_q8_portable.
// Per (row, group): dx = max|x| / 127, q = round-half-even(x * (1 / dx)) (0 if dx == 0), clamped to [-127, 127]
// (the maddubs kernels rely on |q| <= 127), xsum = dx * sum q; with `interleave` each 8 columns are stored as
// [4 even | 4 odd]. The float ops are the portable version's (max is exact, one division, one multiply, the
// conversion rounds half to even under the default MXCSR), so qx, dx and xsum are bit-identical to it.
#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

namespace llmspeed {

#define LS_Q8Q_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define LS_Q8Q_256 __attribute__((target("avx2,fma,f16c")))

LS_Q8Q_512 void quantize_q8_avx512(const float* x, int64_t M, int64_t K, int64_t group, int8_t* qx, float* dx,
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

LS_Q8Q_256 void quantize_q8_avx2(const float* x, int64_t M, int64_t K, int64_t group, int8_t* qx, float* dx,
                                 float* xsum, bool interleave) {
  const int64_t G = K / group;
  // int32 lanes in store order, then byte 0 of each lane: [0 2 4 6 | 1 3 5 7] or [0 1 2 3 | 4 5 6 7]
  const __m256i order = interleave ? _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7) : _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                             0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t gi = 0; gi < G; ++gi) {
      const float* xg = x + m * K + gi * group;
      __m256 amax = _mm256_setzero_ps();
      for (int64_t k = 0; k < group; k += 8) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(xg + k)));
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
      const float d = _mm_cvtss_f32(m4) / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
      const __m256 vi = _mm256_set1_ps(inv);
      __m256i isum = _mm256_setzero_si256();
      for (int64_t k = 0; k < group; k += 8) {
        __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + k), vi));  // nearest-even (MXCSR)
        q = _mm256_min_epi32(_mm256_max_epi32(q, lo), hi);
        isum = _mm256_add_epi32(isum, q);
        const __m256i b = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(q, order), low_bytes);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(qx + m * K + gi * group + k),
                         _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
      }
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(isum), _mm256_extracti128_si256(isum, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
      dx[m * G + gi] = d, xsum[m * G + gi] = d * static_cast<float>(_mm_cvtsi128_si32(s4));
    }
}

}  // namespace llmspeed
#endif  // x86
