"""Speculative decoding inside the engine: a proposer guesses k tokens per request, one batched verify pass of up
to k+1 tokens per request through the paged KV cache checks them, rejected slots are rolled back.

config.py (what `--draft` means), ngram.py (prompt lookup), draft_model.py (a small model with its own paged KV
cache), rejection.py (greedy and Leviathan accept/reject), adaptive.py (per-request k), decoder.py (the step).
"""
