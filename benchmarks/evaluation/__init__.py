"""Evaluation benchmarks: how good the models and their embeddings are (see :mod:`benchmarks`)."""
