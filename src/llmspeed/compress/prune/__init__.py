"""Pruning steps: unstructured / 2:4 (magnitude, Wanda) and structured (attention KV groups, MLP channels).

Importing this package registers the steps.
"""

from llmspeed.compress.prune import structured, unstructured

__all__ = ["structured", "unstructured"]
