"""llmspeed.compress"""
