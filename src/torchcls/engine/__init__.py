"""The training engine: the loop, evaluation, optimisation, checkpoints, distributed set-up."""
