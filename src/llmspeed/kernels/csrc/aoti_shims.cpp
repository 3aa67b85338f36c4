// C entry points of llmspeed's decode ops for AOTInductor packages (runtime/aot.py, kernels/aoti.py).
//
// Without them a compiled package calls each custom op through AOTInductor's proxy executor: a boxed call that
// rebuilds an IValue stack (and copies the schema's argument list) on every call, ~1.5 us x 150 calls a decode
// step. With `aot_inductor.custom_ops_to_c_shims` the generated C++ calls `aoti_torch_cpu_<op>` directly; these
// make a typed (unboxed) dispatcher call to the same registered kernel, so the profiler still sees
// `llmspeed::<op>` and every argument check of the op still runs. Signatures follow the ops' schemas: Tensor ->
// AtenTensorHandle, int -> int64_t, float -> double, the result -> a new handle in *ret0.

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/inductor/aoti_torch/utils.h>

namespace {

using torch::aot_inductor::new_tensor_handle;
using torch::aot_inductor::tensor_handle_to_tensor_pointer;
using T = const at::Tensor&;

template <typename Sig>
c10::TypedOperatorHandle<Sig> typed(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

inline const at::Tensor& t(AtenTensorHandle h) { return *tensor_handle_to_tensor_pointer(h); }

}  // namespace

extern "C" {

AOTI_TORCH_EXPORT AOTITorchError aoti_torch_cpu_int4_linear(AtenTensorHandle x, AtenTensorHandle codes,
                                                            AtenTensorHandle scales, AtenTensorHandle mins,
                                                            int64_t group, AtenTensorHandle* ret0) {
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    static const auto op = typed<at::Tensor(T, T, T, T, int64_t)>("llmspeed::int4_linear");
    *ret0 = new_tensor_handle(op.call(t(x), t(codes), t(scales), t(mins), group));
  });
}

AOTI_TORCH_EXPORT AOTITorchError aoti_torch_cpu_int4_linear_q8(AtenTensorHandle x, AtenTensorHandle codes,
                                                               AtenTensorHandle scales, AtenTensorHandle mins,
                                                               int64_t group, AtenTensorHandle* ret0) {
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    static const auto op = typed<at::Tensor(T, T, T, T, int64_t)>("llmspeed::int4_linear_q8");
    *ret0 = new_tensor_handle(op.call(t(x), t(codes), t(scales), t(mins), group));
  });
}

AOTI_TORCH_EXPORT AOTITorchError aoti_torch_cpu_int8_linear(AtenTensorHandle x, AtenTensorHandle q,
                                                            AtenTensorHandle scales, AtenTensorHandle* ret0) {
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    static const auto op = typed<at::Tensor(T, T, T)>("llmspeed::int8_linear");
    *ret0 = new_tensor_handle(op.call(t(x), t(q), t(scales)));
  });
}

AOTI_TORCH_EXPORT AOTITorchError aoti_torch_cpu_int8_linear_q8(AtenTensorHandle x, AtenTensorHandle q,
                                                               AtenTensorHandle scales, AtenTensorHandle* ret0) {
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    static const auto op = typed<at::Tensor(T, T, T)>("llmspeed::int8_linear_q8");
    *ret0 = new_tensor_handle(op.call(t(x), t(q), t(scales)));
  });
}

AOTI_TORCH_EXPORT AOTITorchError aoti_torch_cpu_int8g_linear(AtenTensorHandle x, AtenTensorHandle q,
                                                             AtenTensorHandle scales, AtenTensorHandle* ret0) {
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    static const auto op = typed<at::Tensor(T, T, T)>("llmspeed::int8g_linear");
    *ret0 = new_tensor_handle(op.call(t(x), t(q), t(scales)));
  });
}

AOTI_TORCH_EXPORT AOTITorchError aoti_torch_cpu_paged_decode_attention(AtenTensorHandle q, AtenTensorHandle k_cache,
                                                                       AtenTensorHandle v_cache, AtenTensorHandle slots,
                                                                       AtenTensorHandle n_valid, double scale,
                                                                       AtenTensorHandle* ret0) {
  AOTI_TORCH_CONVERT_EXCEPTION_TO_ERROR_CODE({
    static const auto op = typed<at::Tensor(T, T, T, T, T, double)>("llmspeed::paged_decode_attention");
    *ret0 = new_tensor_handle(op.call(t(q), t(k_cache), t(v_cache), t(slots), t(n_valid), scale));
  });
}

}  // extern "C"
