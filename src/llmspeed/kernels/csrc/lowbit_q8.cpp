// torch.ops.llmspeed.int4_linear_q8 / int8_linear_q8: int4 or int8 weights x activations rounded to int8 per
// (row, group), integer dot products, float epilogue. Math: ../reference.py. This file: argument checks, the
// portable activation rounding and scalar loops, and the choice of SIMD path per ISA level (the kernels:
// lowbit_q8_tiles512.h / lowbit_q8_tiles256.h, instantiated in lowbit_q8_{vnni512,avx512,vnni256,vnni256x,avx2}.cpp).
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

// The q8 path of one ISA level: kernels, their row tile, the activation rounding, and whether int8 activations
// are stored biased (u8 q + 128, for vpdpbusd). Each level >= kIsaAvx2 has its own integer SIMD path; the scalar
// loop is used at level 0 only (and for int4 groups that are not a multiple of 32, see int4_linear_q8).
using Int4Q8Kernel = void (*)(const Int4Q8Args&, int64_t, int64_t);
using Int8Q8Kernel = void (*)(const Int8Q8Args&, int64_t, int64_t);
using Quantizer = void (*)(const float*, int64_t, int64_t, int64_t, int8_t*, float*, float*, bool);

struct Q8Path {
  const char* name;
  Int4Q8Kernel int4;
  Int8Q8Kernel int8;
  int64_t tile;
  Quantizer quantize;
  bool biased;
};

void int4_q8_scalar(const Int4Q8Args& a, int64_t n0, int64_t n1);
void int8_q8_scalar(const Int8Q8Args& a, int64_t n0, int64_t n1);
void quantize_q8_portable(const float* x, int64_t M, int64_t K, int64_t group, int8_t* qx, float* dx, float* xsum,
                          bool interleave);

Q8Path scalar_q8() { return {"scalar", int4_q8_scalar, int8_q8_scalar, 1, quantize_q8_portable, false}; }

Q8Path pick_q8() {
#if defined(__x86_64__) || defined(__i386__)
  switch (current_isa()) {
    case kIsaAvx512Vnni: return {"avx512-vnni", int4_q8_vnni512, int8_q8_vnni512, 16, quantize_q8_avx512, true};
    case kIsaAvx512: return {"avx512", int4_q8_avx512, int8_q8_avx512, 16, quantize_q8_avx512, false};
    case kIsaAvx2Vnni:
      if (has_avx_vnni()) return {"avx2-vnni", int4_q8_vnni256, int8_q8_vnni256, 8, quantize_q8_avx2, true};
      return {"avx2-vnni-evex", int4_q8_vnni256x, int8_q8_vnni256x, 8, quantize_q8_avx2, true};
    case kIsaAvx2: return {"avx2", int4_q8_avx2, int8_q8_avx2, 8, quantize_q8_avx2, false};
    default: break;
  }
#endif
  return scalar_q8();
}

// The q8 path the ops take at the current level (for groups that are a multiple of 32): tests check that a
// forced level really runs its own kernels.
std::string q8_path_op() { return pick_q8().name; }

inline float h2f(uint16_t bits) { return static_cast<float>(c10::Half(bits, c10::Half::from_bits())); }

// Column k of a q8 activation row lives at q8_pos(k): each 8 columns are stored as [4 even | 4 odd].
inline int64_t q8_pos(int64_t k) { return (k & ~int64_t{7}) + ((k & 1) ? 4 : 0) + ((k & 7) >> 1); }

void quantize_q8_portable(const float* x, int64_t M, int64_t K, int64_t group, int8_t* qx, float* dx, float* xsum,
                          bool interleave) {
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
          isum += static_cast<int8_t>(a.xq[m * K32 + k]) * a.q[n * K + k];  // int8 q (not biased)
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
  const Q8Path path = pick_q8();
  path.quantize(xp, M, K32, 32, qbuf.data(), fbuf.data(), fbuf.data() + M * G, false);
  if (path.biased)
    for (int8_t& v : qbuf) v = static_cast<int8_t>(static_cast<uint8_t>(v) ^ 0x80u);  // q + 128 as u8
  const Int8Q8Args a{reinterpret_cast<const uint8_t*>(qbuf.data()), fbuf.data(), qc.data_ptr<int8_t>(),
                     sc.data_ptr<float>(), y.data_ptr<float>(), M, N, K};
  const int64_t tile = path.tile, tiles = (N + tile - 1) / tile, work = tile * (K * M / 4 + K);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work);
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) { path.int8(a, t0 * tile, std::min(t1 * tile, N)); });
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
  // The SIMD tiles step 32 columns at a time within a group: other groups take the scalar loop.
  const Q8Path path = group % 32 == 0 ? pick_q8() : scalar_q8();
  int8_t* qp = qbuf.data();
  float* dx = fbuf.data();
  float* xs = dx + M * G;
  path.quantize(x2.data_ptr<float>(), M, K, group, qp, dx, xs, true);
  const Int4Q8Args a{qp, dx, xs, c.data_ptr<uint8_t>(), reinterpret_cast<const uint16_t*>(s.data_ptr()),
                     reinterpret_cast<const uint16_t*>(mn.data_ptr()), y.data_ptr<float>(), M, N, K, group};
  // Threads split whole tiles of output rows; a chunk is worth >= ~64K weight-column x activation-row steps.
  const int64_t tile = path.tile, tiles = (N + tile - 1) / tile, work = tile * (K * M / 4 + K);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work);
  at::parallel_for(0, tiles, grain, [&](int64_t t0, int64_t t1) { path.int4(a, t0 * tile, std::min(t1 * tile, N)); });
  return y.view(ysz);
}

}  // namespace
}  // namespace llmspeed

TORCH_LIBRARY_FRAGMENT(llmspeed, m) {
  m.def("int4_linear_q8(Tensor x, Tensor codes, Tensor scales, Tensor mins, int group) -> Tensor");
  m.def("int8_linear_q8(Tensor x, Tensor q, Tensor scales) -> Tensor");
  m.def("q8_path() -> str", &llmspeed::q8_path_op);
}

TORCH_LIBRARY_IMPL(llmspeed, CPU, m) {
  m.impl("int4_linear_q8", &llmspeed::int4_linear_q8);
  m.impl("int8_linear_q8", &llmspeed::int8_linear_q8);
}
