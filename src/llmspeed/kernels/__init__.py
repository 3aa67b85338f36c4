"""llmspeed's CPU kernels for low-bit linears (C++ with AVX-512/AVX2, built on first use) and their pure-torch
reference. Until the C++ build is wired in, every entry point is the reference."""

from llmspeed.kernels.reference import int4_dequantize, int4_linear, int8_linear, pack_nibbles, unpack_nibbles

__all__ = ["int4_dequantize", "int4_linear", "int8_linear", "pack_nibbles", "unpack_nibbles"]
