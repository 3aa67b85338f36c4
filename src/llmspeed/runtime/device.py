"""Where a model runs: `--device cpu|cuda|auto` resolved once, with the dtype that suits it.

One engine and one code path on every device: the weights, the paged KV cache and the logits live on the device;
the model runner packs each step's ids and slot tables on the host (small Python lists) and moves them over in one
`AttnBatch.to(device)`; the sampler samples on the device (a seeded request draws on the host, so a seed gives the
same tokens on CPU and CUDA). llmspeed's C++ kernels are CPU-only: attention uses its paged kernel only for CPU
tensors, and a recipe step declares the devices it supports (`compress.api.check_devices`).
"""

from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda", "auto")
DTYPE_AUTO = "auto"  # float32 on the CPU (bf16 GEMMs are slow on CPUs without AMX/AVX512-BF16), bfloat16 on CUDA


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`cpu`, `cuda`, `cuda:N`, `auto` (CUDA when a GPU is present) or a torch.device; a clear error when absent."""
    if isinstance(device, torch.device):
        return device
    name = (device or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is available to torch {torch.__version__} here "
                             "(use --device cpu or auto)")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise ValueError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> str | torch.dtype:
    """`auto` (or None): float32 on the CPU, bfloat16 on CUDA; anything else as given."""
    if dtype is None or (isinstance(dtype, str) and dtype.strip().lower() == DTYPE_AUTO):
        return "bfloat16" if device.type == "cuda" else "float32"
    return dtype


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
