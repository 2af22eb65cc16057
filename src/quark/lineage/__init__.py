"""Lineage: which run a step reads, where a run's model is, and what every run came from.

The one home for these questions (no step imports another step for them):

    finding.py   the run a step reads: a path the user named, else the run a pipeline handed
                 over, else the nearest ancestor that holds it, else the newest completed run
    models.py    the model directory of any run or path (a training run's hf/, an optimize
                 run's export, a plain Hugging Face or ONNX directory), checked once
    ancestry.py  a run's ancestors through its manifests' inputs, each input re-verified
                 (`quark lineage RUN`)

Nothing here imports torch, lightning or transformers.
"""
