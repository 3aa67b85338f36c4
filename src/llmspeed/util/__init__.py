"""The lowest layer: facts about this machine and small file-system and timing helpers.

Imports nothing else of llmspeed, so every package (kernels included) may use it.
"""
