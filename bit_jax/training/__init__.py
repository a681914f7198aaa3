"""Training a plan: the run over its phases (run.py), one phase's loop (loop.py), the jitted
steps, MixUp, the evaluators and the linear probe, the weights a phase starts from, the
checkpointed run state and its checkpoints."""
