"""Knowledge distillation into a smaller student (`llmspeed distill`).

student.py chooses the teacher layers to keep (block influence, evenly spaced or listed) and builds the student
from the teacher's weights, optionally width-pruned first; data.py cuts the training text into token windows and
orders batches from a seed; train.py is the loop (KL on logits at temperature T, optional hidden-state MSE,
AdamW, warm-up + cosine, clipping, data parallel); checkpoint.py writes resumable checkpoints and the student;
run.py prepares a run directory and runs one rank; parallel.py launches ranks under torchrun or Ray Train.
Nothing here imports the runtime, `llm` or the evaluation package: texts and loaders are passed in.
"""
