"""llmspeed.bench"""
