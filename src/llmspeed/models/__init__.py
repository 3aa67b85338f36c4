"""llmspeed.models"""
