"""Training a cMIM network: the in-memory loop behind ``CMIMTransformer.fit`` and the pretraining
loop behind ``cmim pretrain`` (corpora, checkpoints, ``torchrun``, reports). Builds on
:mod:`sklearn_cmim.nn`, :mod:`sklearn_cmim.chem` and :mod:`sklearn_cmim.persistence`.
"""
