"""`llmspeed auto`: search compression recipes (and serving settings) for the fastest model inside an accuracy budget.

config.py (objective, criteria, budgets) · space.py (the search space, presets as seeds, candidate sources) ·
search.py (screen -> confirm -> choose, pure over a `Measurer`) · store.py (trials in SQLite, resumable) ·
measure.py (the real measurer: eval slices, speed runs) · pareto.py · ablation.py · report.py · api.py.
Nothing heavy is imported here.
"""
