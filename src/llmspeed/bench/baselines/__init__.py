"""Baselines measured in the same bench run: Hugging Face transformers eager, llama.cpp."""
