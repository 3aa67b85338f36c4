// Shared declarations of llmspeed's low-bit CPU kernels (layouts: see ../reference.py).
// Every kernel works on raw, contiguous buffers and a half-open range [n0, n1) of output rows (weight rows),
// so the op wrappers in lowbit.cpp can split N across threads with at::parallel_for.
#pragma once

#include <cstdint>

namespace llmspeed {

// int4: x [M, K] f32, codes [N, K/2] u8 (low nibble = even column), scales/mins [N, K/group] f16 bits,
// y [M, N] f32. K % group == 0, group % 16 == 0.
struct Int4Args {
  const float* x;
  const uint8_t* codes;
  const uint16_t* scales;
  const uint16_t* mins;
  float* y;
  int64_t M, N, K, group;
};

// int8: x [M, K] f32, q [N, K] i8, scales [N] f32, y [M, N] f32. Any K >= 1.
struct Int8Args {
  const float* x;
  const int8_t* q;
  const float* scales;
  float* y;
  int64_t M, N, K;
};

// int4 dequantize: w [N, K] = u * scale + min in f32 (mul then add, each rounded: bit-exact with the reference);
// written to out_f32 if non-null, else rounded to nearest-even bfloat16 bits in out_bf16.
struct DequantArgs {
  const uint8_t* codes;
  const uint16_t* scales;
  const uint16_t* mins;
  float* out_f32;
  uint16_t* out_bf16;
  int64_t N, K, group;
};

void int4_linear_avx512(const Int4Args& a, int64_t n0, int64_t n1);
void int8_linear_avx512(const Int8Args& a, int64_t n0, int64_t n1);
void int4_dequant_avx512(const DequantArgs& a, int64_t n0, int64_t n1);
void int4_linear_avx2(const Int4Args& a, int64_t n0, int64_t n1);
void int8_linear_avx2(const Int8Args& a, int64_t n0, int64_t n1);
void int4_dequant_avx2(const DequantArgs& a, int64_t n0, int64_t n1);

}  // namespace llmspeed
