"""The recipe: what a phase holds (settings.py, the one schema of every field), the config's
defaults, a config's phases merged and checked (fields.py), the plan that resolves every
phase before step 1 (plan.py), the BiT-HyperRule and every phase's learning rate
(hyperrule.py), reduce-on-plateau (plateau.py) and the optimizer (optim.py)."""
