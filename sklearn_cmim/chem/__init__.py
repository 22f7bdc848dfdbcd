"""Molecules and the data made of them: standardised SMILES, tokens, padded batches, SMILES files
and pretraining corpora. Builds on nothing above it in the package (see ``tests/test_layers.py``).
"""
