"""Text data llmspeed ships or finds offline: the Shakespeare plays split by play, CPython's pydoc topics, files.

Below compress and evaluation, so calibration, distillation and evaluation read the same texts the same way.
"""
