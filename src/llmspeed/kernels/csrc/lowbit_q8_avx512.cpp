// q8 kernels, ISA level avx512 (AVX-512 F/BW/VL, no VNNI): 512-bit tiles (lowbit_q8_tiles512.h) with vpmaddubsw + vpmaddwd.
#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#define LS_Q8_T __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define LS_Q8_VNNI 0
#include "lowbit_q8_tiles512.h"

namespace llmspeed {

LS_Q8_T void int4_q8_avx512(const Int4Q8Args& a, int64_t n0, int64_t n1) { int4_q8_tiles(a, n0, n1); }
LS_Q8_T void int8_q8_avx512(const Int8Q8Args& a, int64_t n0, int64_t n1) { int8_q8_tiles(a, n0, n1); }

}  // namespace llmspeed
#endif  // x86
