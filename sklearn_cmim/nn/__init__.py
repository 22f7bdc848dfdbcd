"""The cMIM network and what runs it: the model, its losses, the embeddings read from it, the
device and precision it runs in. Builds on :mod:`sklearn_cmim.chem` and the package's settings only.
"""
