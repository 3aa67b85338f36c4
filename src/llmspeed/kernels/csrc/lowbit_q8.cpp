// torch.ops.llmspeed.int4_linear_q8: int4 weights x activations quantized to int8 per (row, group), integer
// dot products (AVX512-VNNI / AVX-VNNI kernels in lowbit_vnni.cpp), float epilogue. Math: ../reference.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "lowbit.h"

namespace llmspeed {

// lowbit.cpp: the int4 argument checks shared by every int4 op.
void check_int4_args(const char* op, const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins,
                     int64_t group, int64_t K);

namespace {

enum Q8Path { kQ8Scalar = 0, kQ8Vnni256 = 1, kQ8Vnni512 = 2 };

bool cpu_has(const char* what) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (std::string(what) == "avx512vnni") return __builtin_cpu_supports("avx512vnni");
  if (std::string(what) == "avxvnni") return __builtin_cpu_supports("avxvnni");
#endif
  (void)what;
  return false;
}

const bool kVnni512 = cpu_has("avx512vnni");
const bool kVnni256 = cpu_has("avxvnni");

// The ISA level chosen with torch.ops.llmspeed.isa caps the path: 2 -> VNNI-512 (else AVX-VNNI), 1 -> AVX-VNNI,
// 0 -> scalar. Groups that are not a multiple of 32 always take the scalar path.
Q8Path pick_q8(int64_t group) {
  const int64_t isa = current_isa();
  if (group % 32 != 0) return kQ8Scalar;
  if (isa >= 2 && kVnni512) return kQ8Vnni512;
  if (isa >= 1 && kVnni256) return kQ8Vnni256;
  return kQ8Scalar;
}

inline float h2f(uint16_t bits) { return static_cast<float>(c10::Half(bits, c10::Half::from_bits())); }

// Column k of a q8 activation row lives at q8_pos(k): each 8 columns are stored as [4 even | 4 odd].
inline int64_t q8_pos(int64_t k) { return (k & ~int64_t{7}) + ((k & 1) ? 4 : 0) + ((k & 7) >> 1); }

void quantize_q8_portable(const float* x, int64_t M, int64_t K, int64_t group, int8_t* qx, float* dx, float* xsum,
                          bool interleave = true) {
  const int64_t G = K / group;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t gi = 0; gi < G; ++gi) {
      const float* xg = x + m * K + gi * group;
      float amax = 0.0f;
      for (int64_t k = 0; k < group; ++k) amax = std::max(amax, std::fabs(xg[k]));
      const float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
      int32_t isum = 0;
      for (int64_t k = 0; k < group; ++k) {
        const float q = std::min(127.0f, std::max(-127.0f, std::nearbyint(xg[k] * inv)));  // half-to-even
        qx[m * K + (interleave ? q8_pos(gi * group + k) : gi * group + k)] = static_cast<int8_t>(q);
        isum += static_cast<int32_t>(q);
      }
      // xsum of the ROUNDED activations: the min term then cancels the u * scale term's offset exactly, so
      // y = sum_k x_hat_k w_k and the error is sum_k (x_hat_k - x_k) w_k (no amplification by the code offset)
      dx[m * G + gi] = d, xsum[m * G + gi] = d * static_cast<float>(isum);
    }
}

void int4_q8_scalar(const Int4Q8Args& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, g = a.group, G = K / g;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* c = a.codes + n * (K / 2);
    for (int64_t m = 0; m < a.M; ++m) {
      const int8_t* q = a.qx + m * K;
      float acc = 0.0f;
      for (int64_t gi = 0; gi < G; ++gi) {
        int32_t isum = 0;
        for (int64_t k = gi * g; k < (gi + 1) * g; k += 2)
          isum += (c[k / 2] & 0xF) * q[q8_pos(k)] + (c[k / 2] >> 4) * q[q8_pos(k + 1)];
        const float p = static_cast<float>(isum) * a.dx[m * G + gi];
        acc += p * h2f(a.scales[n * G + gi]) + h2f(a.mins[n * G + gi]) * a.xsum[m * G + gi];
      }
      a.y[m * a.N + n] = acc;
    }
  }
}

void int8_q8_scalar(const Int8Q8Args& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, K32 = (K + 31) / 32 * 32, G = K32 / 32;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < a.M; ++m) {
      float acc = 0.0f;
      for (int64_t gi = 0; gi < G; ++gi) {
        int32_t isum = 0;
        for (int64_t k = 32 * gi; k < std::min(K, 32 * gi + 32); ++k)
          isum += (static_cast<int32_t>(a.xq[m * K32 + k]) - 128) * a.q[n * K + k];
        acc += static_cast<float>(isum) * a.dx[m * G + gi];
      }
      a.y[m * a.N + n] = acc * a.scales[n];
    }
}

// x [..., K] f32, q [N, K] i8, scales [N] f32 -> [..., N] f32, x rounded to int8 per (row, 32-column block).
at::Tensor int8_linear_q8(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1 && x.device().is_cpu(),
              "llmspeed::int8_linear_q8: x must be a float32 CPU tensor [..., K], got ", x.scalar_type(), " ", x.sizes());
  const int64_t K = x.size(-1);
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == at::kChar && q.dim() == 2 && q.size(1) == K,
              "llmspeed::int8_linear_q8: q must be an int8 tensor [N, K] with K = ", K, ", got ", q.scalar_type(), " ",
              q.sizes());
  const int64_t N = q.size(0);
  TORCH_CHECK(scales.device().is_cpu() && scales.scalar_type() == at::kFloat && scales.dim() == 1 && scales.size(0) == N,
              "llmspeed::int8_linear_q8: scales must be a float32 tensor [N] = [", N, "], got ", scales.scalar_type(),
              " ", scales.sizes());
  const at::Tensor x2 = x.reshape({-1, K}).contiguous(), qc = q.contiguous(), sc = scales.contiguous();
  const int64_t M = x2.size(0), K32 = (K + 31) / 32 * 32, G = K32 / 32;
  std::vector<int64_t> ysz(x.sizes().begin(), x.sizes().end());
  ysz.back() = N;
  at::Tensor y = at::empty({M, N}, x.options());  // [M, N]
  if (M == 0 || N == 0) return y.view(ysz);
  if (K == 0) return y.zero_().view(ysz);
  const float* xp = x2.data_ptr<float>();
  std::vector<float> xpad;  // [M, K32] zero-padded copy when K % 32 != 0
  if (K32 != K) {
    xpad.assign(static_cast<size_t>(M * K32), 0.0f);
    for (int64_t m = 0; m < M; ++m) std::copy(xp + m * K, xp + (m + 1) * K, xpad.begin() + m * K32);
    xp = xpad.data();
  }
  std::vector<int8_t> qbuf(static_cast<size_t>(M * K32));
  std::vector<float> fbuf(static_cast<size_t>(2 * M * G));  // dx, (unused) xsum [M, G]
  const bool vnni = current_isa() >= 2 && kVnni512;
#if defined(__x86_64__) || defined(__i386__)
  if (vnni)
    quantize_q8_avx512(xp, M, K32, 32, qbuf.data(), fbuf.data(), fbuf.data() + M * G, false);
  else
#endif
    quantize_q8_portable(xp, M, K32, 32, qbuf.data(), fbuf.data(), fbuf.data() + M * G, false);
  for (int8_t& v : qbuf) v = static_cast<int8_t>(static_cast<uint8_t>(v) ^ 0x80u);  // q + 128 as u8
  const Int8Q8Args a{reinterpret_cast<const uint8_t*>(qbuf.data()), fbuf.data(), qc.data_ptr<int8_t>(),
                     sc.data_ptr<float>(), y.data_ptr<float>(), M, N, K};
  void (*kernel)(const Int8Q8Args&, int64_t, int64_t) = int8_q8_scalar;
  int64_t tile = 1;
#if defined(__x86_64__) || defined(__i386__)
  if (vnni) kernel = int8_q8_vnni512, tile = 16;
#endif
  const int64_t tiles = (N + tile - 1) / tile, work = tile * (K * M / 4 + K);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work);
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) { kernel(a, t0 * tile, std::min(t1 * tile, N)); });
  return y.view(ysz);
}

// x [..., K] f32, codes [N, K/2] u8, scales/mins [N, K/group] f16 -> [..., N] f32.
at::Tensor int4_linear_q8(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins,
                          int64_t group) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1,
              "llmspeed::int4_linear_q8: x must be a float32 tensor [..., K], got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "llmspeed::int4_linear_q8: x must be a CPU tensor, got ", x.device());
  const int64_t K = x.size(-1);
  check_int4_args("int4_linear_q8", codes, scales, mins, group, K);
  const at::Tensor x2 = x.reshape({-1, K}).contiguous(), c = codes.contiguous();  // [M, K], [N, K/2]
  const at::Tensor s = scales.contiguous(), mn = mins.contiguous();                // [N, G]
  const int64_t M = x2.size(0), N = c.size(0), G = K / group;
  std::vector<int64_t> ysz(x.sizes().begin(), x.sizes().end());
  ysz.back() = N;
  at::Tensor y = at::empty({M, N}, x.options());  // [M, N]
  if (M == 0 || N == 0) return y.view(ysz);
  // Quantized activations: plain buffers (cheaper than tensors at decode sizes). qx [M, K] permuted per 8
  // columns; dx, xsum [M, G].
  std::vector<int8_t> qbuf(static_cast<size_t>(M * K));
  std::vector<float> fbuf(static_cast<size_t>(2 * M * G));
  const Q8Path path = pick_q8(group);
  int8_t* qp = qbuf.data();
  float* dx = fbuf.data();
  float* xs = dx + M * G;
#if defined(__x86_64__) || defined(__i386__)
  if (path == kQ8Vnni512)
    quantize_q8_avx512(x2.data_ptr<float>(), M, K, group, qp, dx, xs);
  else
#endif
    quantize_q8_portable(x2.data_ptr<float>(), M, K, group, qp, dx, xs);
  const Int4Q8Args a{qp, dx, xs, c.data_ptr<uint8_t>(), reinterpret_cast<const uint16_t*>(s.data_ptr()),
                     reinterpret_cast<const uint16_t*>(mn.data_ptr()), y.data_ptr<float>(), M, N, K, group};
  void (*kernel)(const Int4Q8Args&, int64_t, int64_t) = int4_q8_scalar;
  int64_t tile = 1;
#if defined(__x86_64__) || defined(__i386__)
  if (path == kQ8Vnni512) kernel = int4_q8_vnni512, tile = 16;
  if (path == kQ8Vnni256) kernel = int4_q8_vnni256, tile = 8;
#endif
  // Threads split whole tiles of output rows; a chunk is worth >= ~64K weight-column x activation-row steps.
  const int64_t tiles = (N + tile - 1) / tile, work = tile * (K * M / 4 + K);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work);
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) { kernel(a, t0 * tile, std::min(t1 * tile, N)); });
  return y.view(ysz);
}

}  // namespace
}  // namespace llmspeed

TORCH_LIBRARY_FRAGMENT(llmspeed, m) {
  m.def("int4_linear_q8(Tensor x, Tensor codes, Tensor scales, Tensor mins, int group) -> Tensor");
  m.def("int8_linear_q8(Tensor x, Tensor q, Tensor scales) -> Tensor");
}

TORCH_LIBRARY_IMPL(llmspeed, CPU, m) {
  m.impl("int4_linear_q8", &llmspeed::int4_linear_q8);
  m.impl("int8_linear_q8", &llmspeed::int8_linear_q8);
}
