// q8 kernels, ISA level avx2-vnni on CPUs with AVX512-VNNI + VL but no AVX-VNNI (Ice Lake, Zen 4): the 256-bit tiles
// of lowbit_q8_vnni256.cpp with the EVEX encoding of vpdpbusd ymm. Never chosen by default there (avx512-vnni is
// higher); it lets tests and benchmarks run the 256-bit VNNI tiles on such a CPU.
#include "lowbit.h"

#if defined(__x86_64__) || defined(__i386__)
#define LS_Q8_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define LS_Q8_VNNI 1
#define LS_Q8_DPBUSD _mm256_dpbusd_epi32
#include "lowbit_q8_tiles256.h"

namespace llmspeed {

LS_Q8_T void int4_q8_vnni256x(const Int4Q8Args& a, int64_t n0, int64_t n1) { int4_q8_tiles(a, n0, n1); }
LS_Q8_T void int8_q8_vnni256x(const Int8Q8Args& a, int64_t n0, int64_t n1) { int8_q8_tiles(a, n0, n1); }

}  // namespace llmspeed
#endif  // x86
