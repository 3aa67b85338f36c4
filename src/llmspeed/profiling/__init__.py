"""llmspeed.profiling"""
