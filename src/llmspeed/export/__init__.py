"""Export an llmspeed model (dense or compressed) to a Hugging Face directory or a GGUF file."""

from __future__ import annotations

from llmspeed.export.api import FORMATS, export

__all__ = ["FORMATS", "export"]
