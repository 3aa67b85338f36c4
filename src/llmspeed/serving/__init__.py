"""llmspeed.serving"""
