"""The benchmark suite: every number in ``docs/benchmarks.md``, the model cards and the findings.

Each benchmark is a module run from the repository root as ``python -m benchmarks.PART.NAME``
(``--help`` lists its options; most have a seconds-long ``--quick`` smoke mode that the tests run).
Data paths, data and model loading, the quick-mode architecture and report writing live in one
shared module, :mod:`benchmarks.common`. The suite has two parts.

Evaluation (:mod:`benchmarks.evaluation`): how good the models and their embeddings are.

* ``downstream``: MoleculeNet property prediction, cMIM and MIM embeddings against ECFP4 and RDKit
  descriptors, on committed scaffold splits (``benchmarks/splits``).
* ``learning_curve``: choose a pretraining recipe without test data, then report the chosen
  models beside fingerprints, descriptors, MiniMol features and their unions, with their cost.
* ``chemprop_peer``: chemprop trained per task on the same scaffold splits and random-CV folds (a
  peer: the ``bench`` extra).
* ``finetune``: fine-tuning a bundled model on a task's molecules against frozen embeddings.
* ``reconstruction``: exact-match reconstruction, cMIM against MIM (claim 3 of docs/method.md).
* ``batch_size``: sensitivity to batch size, cMIM against InfoNCE (claim 4 of docs/method.md).
* ``coverage``: how far the downstream datasets lie from the pretraining corpus.
* ``optimization``: property-guided optimisation in the latent space, cMIM against MIM.
* ``pretrained_metrics``: reconstruction and generative metrics of a pretrained model, written
  into its model card.
* ``prior_shapes``: which distribution, fitted to training molecules' latent means, ``sample``
  should draw from.
* ``readout``: which informative-embedding recipe to read from the bundled models, chosen by
  inner CV.
* ``architecture``: which architecture reconstructs best on a fixed training budget (how the
  defaults were picked).

Performance (:mod:`benchmarks.performance`): how fast the package runs and how much memory it takes.

* ``speed``: embedding, decoding and training speed beside references measured by the same run.
* ``embed_memory``: peak memory and speed of ``cmim embed`` on a large SMILES file.
* ``pretrain_throughput``: model FLOP utilisation of ``cmim pretrain`` at its defaults and around
  them.
* ``train_throughput``: training throughput of ``CMIMTransformer``, fp32 against bf16 autocast.
* ``attention_kernel``: which attention implementation to use on CPU in bf16.
* ``threads``: fitting and embedding with one thread, torch's default and shorter OpenMP
  spinning, on an idle machine and with one core busy.
"""
