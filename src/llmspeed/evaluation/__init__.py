"""llmspeed.evaluation"""
