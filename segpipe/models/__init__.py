"""Models: architectures in a registry, checkpoints, predictors by task, tiled inference, training.

Importing this package is cheap; torch is imported by the submodules that need it.
"""
