"""The one inference runtime: paged KV cache, scheduler, engine."""
