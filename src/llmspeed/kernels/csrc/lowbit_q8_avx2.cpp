// q8 kernels, ISA level avx2 (AVX2 + FMA, no VNNI): 256-bit tiles (lowbit_q8_tiles256.h) with vpmaddubsw + vpmaddwd.
#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#define LS_Q8_T __attribute__((target("avx2,fma,f16c")))
#define LS_Q8_VNNI 0
#include "lowbit_q8_tiles256.h"

namespace llmspeed {

LS_Q8_T void int4_q8_avx2(const Int4Q8Args& a, int64_t n0, int64_t n1) { int4_q8_tiles(a, n0, n1); }
LS_Q8_T void int8_q8_avx2(const Int8Q8Args& a, int64_t n0, int64_t n1) { int8_q8_tiles(a, n0, n1); }

}  // namespace llmspeed
#endif  // x86
