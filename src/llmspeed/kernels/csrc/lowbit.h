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

// int4 x int8 (q8): activations pre-quantized per (row, group): qx [M, K] i8 with each 8 columns stored as
// [4 even | 4 odd] (matching the nibble order of 4 code bytes), dx [M, G] f32 (x ~ qx * dx), xsum [M, G] f32 (sum of
// the ROUNDED x over the group, times dx). y [m, n] = sum_g scale[n,g] dx[m,g] (sum_k qx u) + min[n,g] xsum[m,g].
// K % group == 0; group % 32 == 0 for the SIMD kernels, % 16 for the scalar one.
struct Int4Q8Args {
  const int8_t* qx;
  const float* dx;
  const float* xsum;
  const uint8_t* codes;
  const uint16_t* scales;
  const uint16_t* mins;
  float* y;
  int64_t M, N, K, group;
};

// int8 x int8 (q8): xq [M, K32] = the activations q rounded per (row, 32-column block) in natural column order,
// zero-padded to K32 = K rounded up to 32 (q = 0 there), as int8 q (maddubs kernels, the scalar one) or as
// uint8 q + 128 (VNNI kernels: vpdpbusd multiplies unsigned by signed bytes); dx [M, K32/32] f32; w [N, K] i8,
// scales [N] f32. y [m, n] = scales[n] sum_b dx[m,b] sum_{k in b} q[m,k] w[n,k].
struct Int8Q8Args {
  const uint8_t* xq;
  const float* dx;
  const int8_t* q;
  const float* scales;
  float* y;
  int64_t M, N, K;
};

// Instruction-set levels (torch.ops.llmspeed.isa; a level implies every feature of the levels below it that
// it needs). Float kernels and attention: AVX-512 path at kIsaAvx512 and above, AVX2+FMA at kIsaAvx2 and
// kIsaAvx2Vnni. q8 kernels: one integer path per level (lowbit_q8.cpp).
enum IsaLevel : int64_t {
  kIsaScalar = 0,
  kIsaAvx2 = 1,      // AVX2 + FMA + F16C
  kIsaAvx2Vnni = 2,  // + 256-bit vpdpbusd: AVX-VNNI (VEX), or AVX512-VNNI + VL (EVEX form of the same op)
  kIsaAvx512 = 3,    // AVX-512 F/BW/VL (+ AVX2, FMA)
  kIsaAvx512Vnni = 4,  // + AVX512-VNNI
};

// The level the ops currently use (see torch.ops.llmspeed.isa); whether this CPU's 256-bit VNNI is the VEX
// AVX-VNNI (true) or only AVX512-VNNI + VL (false).
int64_t current_isa();
bool has_avx_vnni();

void int4_linear_avx512(const Int4Args& a, int64_t n0, int64_t n1);
void int8_linear_avx512(const Int8Args& a, int64_t n0, int64_t n1);
void int4_dequant_avx512(const DequantArgs& a, int64_t n0, int64_t n1);
void int4_linear_avx2(const Int4Args& a, int64_t n0, int64_t n1);
void int8_linear_avx2(const Int8Args& a, int64_t n0, int64_t n1);
void int4_dequant_avx2(const DequantArgs& a, int64_t n0, int64_t n1);
// q8 kernels: rows [n0, n1), any n0; 16 (512-bit) or 8 (256-bit) rows per tile. The tile code is shared
// (lowbit_q8_tiles.h); the integer dot products differ: vpdpbusd (lowbit_q8_vnni*.cpp) or vpmaddubsw +
// vpmaddwd (lowbit_q8_madd.cpp, no VNNI).
void int4_q8_vnni512(const Int4Q8Args& a, int64_t n0, int64_t n1);  // AVX512-VNNI
void int8_q8_vnni512(const Int8Q8Args& a, int64_t n0, int64_t n1);
void int4_q8_vnni256(const Int4Q8Args& a, int64_t n0, int64_t n1);  // AVX-VNNI
void int8_q8_vnni256(const Int8Q8Args& a, int64_t n0, int64_t n1);
void int4_q8_vnni256x(const Int4Q8Args& a, int64_t n0, int64_t n1);  // AVX512-VNNI + VL, 256-bit
void int8_q8_vnni256x(const Int8Q8Args& a, int64_t n0, int64_t n1);
void int4_q8_avx512(const Int4Q8Args& a, int64_t n0, int64_t n1);  // AVX-512 BW
void int8_q8_avx512(const Int8Q8Args& a, int64_t n0, int64_t n1);
void int4_q8_avx2(const Int4Q8Args& a, int64_t n0, int64_t n1);  // AVX2
void int8_q8_avx2(const Int8Q8Args& a, int64_t n0, int64_t n1);
// x [M, K] f32 -> qx, dx, xsum as in Int4Q8Args (lowbit_q8_quant.cpp; bit-identical qx/dx/xsum to the portable
// version in lowbit_q8.cpp). interleave = false: natural column order (int8_linear_q8). group % 16 == 0 (AVX-512)
// or % 8 == 0 (AVX2).
void quantize_q8_avx512(const float* x, int64_t M, int64_t K, int64_t group, int8_t* qx, float* dx, float* xsum,
                        bool interleave = true);
void quantize_q8_avx2(const float* x, int64_t M, int64_t K, int64_t group, int8_t* qx, float* dx, float* xsum,
                      bool interleave = true);

}  // namespace llmspeed

// Dispatch a row count mt (1..8) to the template instance F<mt> (row tiles of the x86 kernels).
#define LS_CASES8(F, ...)                \
  switch (mt) {                          \
    case 1: F<1>(__VA_ARGS__); break;    \
    case 2: F<2>(__VA_ARGS__); break;    \
    case 3: F<3>(__VA_ARGS__); break;    \
    case 4: F<4>(__VA_ARGS__); break;    \
    case 5: F<5>(__VA_ARGS__); break;    \
    case 6: F<6>(__VA_ARGS__); break;    \
    case 7: F<7>(__VA_ARGS__); break;    \
    default: F<8>(__VA_ARGS__); break;   \
  }
