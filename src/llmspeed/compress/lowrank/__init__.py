"""Low-rank steps (`svd-r{rank}`, `svd-e{energy}`); importing this package registers them."""

from llmspeed.compress.lowrank import svd

__all__ = ["svd"]
