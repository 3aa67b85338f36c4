// llmspeed's low-bit CPU ops: argument checks, the portable scalar path, runtime ISA dispatch, threading
// over output rows and the dispatcher registration (torch.ops.llmspeed.*). SIMD kernels: lowbit_x86.cpp.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "lowbit.h"

namespace llmspeed {
namespace {

// ---------------------------------------------------------------- ISA selection

struct CpuFeatures {
  bool avx2 = false, avx512 = false, avx512vnni = false, avxvnni = false;
};

CpuFeatures detect_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // every AVX2+FMA CPU (Haswell / Zen and later) also has F16C
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  f.avx512vnni = f.avx512 && __builtin_cpu_supports("avx512vnni");
  f.avxvnni = f.avx2 && __builtin_cpu_supports("avxvnni");
#endif
  return f;
}

const CpuFeatures kCpu = detect_features();

// Bit l set: this CPU runs level l (IsaLevel in lowbit.h).
int64_t supported_mask() {
  int64_t m = int64_t{1} << kIsaScalar;
  if (kCpu.avx2) m |= int64_t{1} << kIsaAvx2;
  if (kCpu.avxvnni || kCpu.avx512vnni) m |= int64_t{1} << kIsaAvx2Vnni;
  if (kCpu.avx512) m |= int64_t{1} << kIsaAvx512;
  if (kCpu.avx512vnni) m |= int64_t{1} << kIsaAvx512Vnni;
  return m;
}

const int64_t kSupported = supported_mask();

// The highest level this CPU runs that is <= `level`.
int64_t best_at_most(int64_t level) {
  for (int64_t l = std::min<int64_t>(level, kIsaAvx512Vnni); l > kIsaScalar; --l)
    if (kSupported >> l & 1) return l;
  return kIsaScalar;
}

const int64_t kDetected = best_at_most(kIsaAvx512Vnni);
std::atomic<int64_t> g_isa{kDetected};

// isa(-1) -> the level in use; isa(l) -> use the highest level this CPU runs that is <= l from now on (tests and
// benchmarks run every path this way).
int64_t isa_op(int64_t level) {
  if (level >= 0) g_isa.store(best_at_most(level));
  return g_isa.load();
}

// The levels this CPU runs, highest first.
std::vector<int64_t> isa_levels_op() {
  std::vector<int64_t> out;
  for (int64_t l = kIsaAvx512Vnni; l >= kIsaScalar; --l)
    if (kSupported >> l & 1) out.push_back(l);
  return out;
}

// ---------------------------------------------------------------- scalar path

inline float h2f(uint16_t bits) { return static_cast<float>(c10::Half(bits, c10::Half::from_bits())); }

inline uint16_t f2bf16(float f) {  // round to nearest even (finite inputs), as torch's .to(torch.bfloat16)
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

void int4_linear_scalar(const Int4Args& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, g = a.group, G = K / g;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* c = a.codes + n * (K / 2);
    for (int64_t m = 0; m < a.M; ++m) {
      const float* x = a.x + m * K;
      float acc = 0.0f;
      for (int64_t gi = 0; gi < G; ++gi) {
        const float s = h2f(a.scales[n * G + gi]), mn = h2f(a.mins[n * G + gi]);
        for (int64_t k = gi * g; k < (gi + 1) * g; k += 2) {
          acc += x[k] * (static_cast<float>(c[k / 2] & 0xF) * s + mn);
          acc += x[k + 1] * (static_cast<float>(c[k / 2] >> 4) * s + mn);
        }
      }
      a.y[m * a.N + n] = acc;
    }
  }
}

void int8_linear_scalar(const Int8Args& a, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* q = a.q + n * a.K;
    for (int64_t m = 0; m < a.M; ++m) {
      const float* x = a.x + m * a.K;
      float acc = 0.0f;
      for (int64_t k = 0; k < a.K; ++k) acc += x[k] * static_cast<float>(q[k]);
      a.y[m * a.N + n] = acc * a.scales[n];
    }
  }
}

void int4_dequant_scalar(const DequantArgs& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, g = a.group, G = K / g;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const uint8_t b = a.codes[n * (K / 2) + k / 2];
      const float u = static_cast<float>((k & 1) ? (b >> 4) : (b & 0xF));
      const float w = u * h2f(a.scales[n * G + k / g]) + h2f(a.mins[n * G + k / g]);  // -ffp-contract=off
      if (a.out_f32)
        a.out_f32[n * K + k] = w;
      else
        a.out_bf16[n * K + k] = f2bf16(w);
    }
}

// ---------------------------------------------------------------- dispatch + threading

template <typename Args>
using Kernel = void (*)(const Args&, int64_t, int64_t);

template <typename Args>
Kernel<Args> pick(Kernel<Args> k512, Kernel<Args> k2, Kernel<Args> k0) {
#if defined(__x86_64__) || defined(__i386__)
  const int64_t level = g_isa.load(std::memory_order_relaxed);
  return level >= kIsaAvx512 ? k512 : level >= kIsaAvx2 ? k2 : k0;
#else
  (void)k512, (void)k2;
  return k0;
#endif
}

#if !(defined(__x86_64__) || defined(__i386__))
#define int4_linear_avx512 nullptr
#define int4_linear_avx2 nullptr
#define int8_linear_avx512 nullptr
#define int8_linear_avx2 nullptr
#define int4_dequant_avx512 nullptr
#define int4_dequant_avx2 nullptr
#endif

// Split [0, N) into one contiguous chunk per thread, unless the whole job is too small to be worth it.
template <typename Args>
void run_rows(Kernel<Args> kernel, const Args& a, int64_t N, int64_t work_per_row) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, work_per_row));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) { kernel(a, n0, n1); });
}

void check_cpu(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "llmspeed::", op, ": ", name, " must be a CPU tensor, got ", t.device());
}

void check_int4(const char* op, const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins,
                int64_t group, int64_t K) {
  check_cpu(codes, op, "codes"), check_cpu(scales, op, "scales"), check_cpu(mins, op, "mins");
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 2, "llmspeed::", op,
              ": codes must be a 2-D uint8 tensor [N, K/2], got ", codes.scalar_type(), " ", codes.sizes());
  TORCH_CHECK(group > 0 && group % 16 == 0, "llmspeed::", op, ": group must be a positive multiple of 16, got ", group);
  TORCH_CHECK(K > 0 && K % group == 0, "llmspeed::", op, ": K (", K, ") must be a positive multiple of group (", group, ")");
  TORCH_CHECK(codes.size(1) * 2 == K, "llmspeed::", op, ": codes ", codes.sizes(), " must be [N, K/2] with K = ", K);
  const int64_t N = codes.size(0), G = K / group;
  for (const at::Tensor* t : {&scales, &mins}) {
    const char* name = t == &scales ? "scales" : "mins";
    TORCH_CHECK(t->scalar_type() == at::kHalf, "llmspeed::", op, ": ", name, " must be float16, got ", t->scalar_type());
    TORCH_CHECK(t->dim() == 2 && t->size(0) == N && t->size(1) == G, "llmspeed::", op, ": ", name, " must be [N, K/group] = [",
                N, ", ", G, "], got ", t->sizes());
  }
}

std::vector<int64_t> out_sizes(const at::Tensor& x, int64_t N) {
  std::vector<int64_t> s(x.sizes().begin(), x.sizes().end());
  s.back() = N;
  return s;
}

// ---------------------------------------------------------------- ops

// x [..., K] f32, codes [N, K/2] u8, scales/mins [N, K/group] f16 -> [..., N] f32.
at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins,
                       int64_t group) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1, "llmspeed::int4_linear: x must be a float32 tensor [..., K], got ",
              x.scalar_type(), " ", x.sizes());
  check_cpu(x, "int4_linear", "x");
  const int64_t K = x.size(-1);
  check_int4("int4_linear", codes, scales, mins, group, K);
  const at::Tensor x2 = x.reshape({-1, K}).contiguous(), c = codes.contiguous();  // [M, K], [N, K/2]
  const at::Tensor s = scales.contiguous(), mn = mins.contiguous();                // [N, G]
  const int64_t M = x2.size(0), N = c.size(0);
  at::Tensor y = at::empty({M, N}, x.options());  // [M, N]
  if (M > 0 && N > 0) {
    const Int4Args a{x2.data_ptr<float>(), c.data_ptr<uint8_t>(), reinterpret_cast<const uint16_t*>(s.data_ptr()),
                     reinterpret_cast<const uint16_t*>(mn.data_ptr()), y.data_ptr<float>(), M, N, K, group};
    run_rows<Int4Args>(pick<Int4Args>(int4_linear_avx512, int4_linear_avx2, int4_linear_scalar), a, N, K * M / 4 + K);
  }
  return y.view(out_sizes(x, N));
}

// x [..., K] f32, q [N, K] i8, scales [N] f32 -> [..., N] f32.
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1, "llmspeed::int8_linear: x must be a float32 tensor [..., K], got ",
              x.scalar_type(), " ", x.sizes());
  check_cpu(x, "int8_linear", "x"), check_cpu(q, "int8_linear", "q"), check_cpu(scales, "int8_linear", "scales");
  const int64_t K = x.size(-1);
  TORCH_CHECK(q.scalar_type() == at::kChar && q.dim() == 2 && q.size(1) == K,
              "llmspeed::int8_linear: q must be an int8 tensor [N, K] with K = ", K, ", got ", q.scalar_type(), " ", q.sizes());
  const int64_t N = q.size(0);
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.dim() == 1 && scales.size(0) == N,
              "llmspeed::int8_linear: scales must be a float32 tensor [N] = [", N, "], got ", scales.scalar_type(), " ",
              scales.sizes());
  const at::Tensor x2 = x.reshape({-1, K}).contiguous(), qc = q.contiguous(), sc = scales.contiguous();
  const int64_t M = x2.size(0);
  at::Tensor y = at::empty({M, N}, x.options());  // [M, N]
  if (M > 0 && N > 0 && K > 0) {
    const Int8Args a{x2.data_ptr<float>(), qc.data_ptr<int8_t>(), sc.data_ptr<float>(), y.data_ptr<float>(), M, N, K};
    run_rows<Int8Args>(pick<Int8Args>(int8_linear_avx512, int8_linear_avx2, int8_linear_scalar), a, N, K * M / 4 + K);
  } else if (K == 0) {
    y.zero_();
  }
  return y.view(out_sizes(x, N));
}

// codes [N, K/2] u8, scales/mins [N, K/group] f16 -> [N, K] float32 or bfloat16.
at::Tensor int4_dequantize(const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins, int64_t group,
                           at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
              "llmspeed::int4_dequantize: dtype must be float32 or bfloat16, got ", dtype);
  TORCH_CHECK(codes.dim() == 2, "llmspeed::int4_dequantize: codes must be 2-D [N, K/2], got ", codes.sizes());
  const int64_t K = codes.size(1) * 2;
  check_int4("int4_dequantize", codes, scales, mins, group, K);
  const at::Tensor c = codes.contiguous(), s = scales.contiguous(), mn = mins.contiguous();
  const int64_t N = c.size(0);
  at::Tensor w = at::empty({N, K}, codes.options().dtype(dtype));  // [N, K]
  if (N > 0) {
    const bool f32 = dtype == at::kFloat;
    const DequantArgs a{c.data_ptr<uint8_t>(), reinterpret_cast<const uint16_t*>(s.data_ptr()),
                        reinterpret_cast<const uint16_t*>(mn.data_ptr()), f32 ? w.data_ptr<float>() : nullptr,
                        f32 ? nullptr : reinterpret_cast<uint16_t*>(w.data_ptr()), N, K, group};
    run_rows<DequantArgs>(pick<DequantArgs>(int4_dequant_avx512, int4_dequant_avx2, int4_dequant_scalar), a, N, K);
  }
  return w;
}

}  // namespace

int64_t current_isa() { return g_isa.load(std::memory_order_relaxed); }
bool has_avx_vnni() { return kCpu.avxvnni; }

// Shared with lowbit_q8.cpp (declared there: this header stays free of ATen).
void check_int4_args(const char* op, const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins,
                     int64_t group, int64_t K) {
  check_int4(op, codes, scales, mins, group, K);
}

}  // namespace llmspeed

TORCH_LIBRARY(llmspeed, m) {
  m.def("int4_linear(Tensor x, Tensor codes, Tensor scales, Tensor mins, int group) -> Tensor");
  m.def("int8_linear(Tensor x, Tensor q, Tensor scales) -> Tensor");
  m.def("int4_dequantize(Tensor codes, Tensor scales, Tensor mins, int group, ScalarType dtype) -> Tensor");
  m.def("isa(int level=-1) -> int", &llmspeed::isa_op);
  m.def("isa_levels() -> int[]", &llmspeed::isa_levels_op);
}

TORCH_LIBRARY_IMPL(llmspeed, CPU, m) {
  m.impl("int4_linear", &llmspeed::int4_linear);
  m.impl("int8_linear", &llmspeed::int8_linear);
  m.impl("int4_dequantize", &llmspeed::int4_dequantize);
}
