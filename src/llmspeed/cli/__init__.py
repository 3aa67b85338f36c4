"""llmspeed.cli"""
