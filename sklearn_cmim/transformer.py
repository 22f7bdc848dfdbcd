"""``CMIMTransformer``: cMIM molecular embeddings as a scikit-learn transformer.

The class here is what the estimator is: its documentation, its parameters and their checks, its
fitted state, and the helpers its methods share. The methods themselves come from three mixins,
one module each: fitting and embedding (:mod:`sklearn_cmim.embedding`), decoding and sampling
(:mod:`sklearn_cmim.decoding`), and saving, loading and pickling (:mod:`sklearn_cmim.saving`).
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from .chem.inputs import ERRORS, MoleculeInputMixin, as_items, encode_items
from .chem.standardize import MAX_CHARACTERS, Standardizer
from .decoding import DecodingMixin
from .embedding import EmbeddingMixin
from .nn.device import cpu_threads
from .nn.embeddings import KINDS, LAYERS, POOLINGS, EmbeddingSpec
from .nn.inference import embed_sequences
from .params import Range
from .saving import SavingMixin

__all__ = ["CMIMTransformer"]

_POSITIVE_INT = Range(Integral, 1, None, closed="left")
_NON_NEGATIVE_INT = Range(Integral, 0, None, closed="left")
_NON_NEGATIVE = Range(Real, 0, None, closed="left")
_POSITIVE = Range(Real, 0, None, closed="neither")

# What the methods of a fitted estimator read: checked again by them, because ``set_params`` may
# change these after ``fit`` (``set_params(embedding="latent").transform(X)``).
_INFERENCE_PARAMETERS = ("embedding", "informative_layers", "informative_pooling",
                         "informative_with_latent", "inference_batch_size", "precision", "n_threads",
                         "errors")


class CMIMTransformer(MoleculeInputMixin, EmbeddingMixin, DecodingMixin, SavingMixin, BaseEstimator):
    """Learned molecular embeddings from a contrastive Mutual Information Machine (cMIM).

    A probabilistic encoder-decoder over SMILES (Perceiver encoder, Gaussian latent, causal
    Transformer decoder) trained with the A-MIM loss plus an augmentation-free contrastive term.
    ``transform`` maps molecules to embeddings, ``inverse_transform`` decodes latent vectors back
    to SMILES, and ``score`` is the exact reconstruction accuracy.

    Parameters
    ----------
    pretrained : str or path, default=None
        A bundled model name (see :func:`sklearn_cmim.list_pretrained`) or a directory written by
        :meth:`save_pretrained` (a ``Path``, or a string that is no bundled name). When given,
        ``fit`` starts from it and the architecture parameters below (``d_model`` ...
        ``max_length``) and ``standardizer`` are taken from it; with ``max_epochs=0`` ``fit`` only
        loads it. ``None`` trains from scratch on X.
    contrastive_weight : float, default=1.0
        Weight lambda of the contrastive term; ``0.0`` is plain A-MIM (the MIM baseline).
    temperature : float, default=0.1
        Contrastive temperature tau.
    contrastive_positive : {"self", "mean"}, default="self"
        Positive pair of the contrastive term: the code itself (similarity 1), or the posterior
        mean of the same molecule (the encoder's noise as the second view).
    d_model, n_heads, d_ff, n_encoder_layers, n_decoder_layers : int
        Transformer width, attention heads, feed-forward width and depths.
    n_latents : int, default=8
        K, the number of Perceiver latent queries (and latent vectors). Several latents let the
        decoder attend to different parts of the code, which measurably speeds up learning to
        reconstruct on a small compute budget (``benchmarks/evaluation/architecture.py``); MolMIM uses 1.
    latent_dim : int, default=32
        D, the size of each latent vector; the latent embedding has K x D values.
    dropout : float, default=0.1
    max_length : int, default=128
        Longest molecule in tokens, counting <bos> and <eos>. Longer molecules are bad items
        (see ``errors``), never silently truncated.
    max_epochs : int, default=10
        Passes over X in ``fit``; 0 with ``pretrained`` just loads the model.
    batch_size : int, default=64
        Training batch size (also the number of contrastive candidates per step).
    learning_rate, weight_decay : float
        AdamW settings; the rate warms up over 1% of the steps, then decays by cosine to 10%.
    mim_warmup_steps : int, default=1000
        Steps over which the weight of the MIM latent term ramps from 0 to 1.
    inference_batch_size : int, default=256
        Molecules per forward pass in ``transform``, ``inverse_transform`` and ``score``.
    embedding : {"informative", "latent"}, default="informative"
        What ``transform`` returns: decoder-state "informative" embeddings, or the latent mean.
    informative_layers : {"last", "mean"}, default="last"
        Decoder layers pooled for informative embeddings.
    informative_pooling : {"mean", "mean_max"}, default="mean_max"
        Pooling over the molecule's tokens.
    informative_with_latent : bool, default=True
        Put the latent mean in front of the pooled decoder states.
    standardizer : Standardizer, default=None
        How molecules are standardised before tokenising; ``None`` means ``Standardizer()``.
    device : str or torch.device, default=None
        ``None`` picks cuda, then mps, then cpu. The device used is stored in ``device_``.
    precision : {"auto", "bf16", "fp32"}, default="auto"
        "auto" trains in bf16 autocast where the hardware runs bf16 natively (recent CPUs and
        GPUs) and runs inference (``transform``, ``inverse_transform``, ``score``, ``sample``) in
        fp32, so that a molecule's embedding does not depend on the molecules batched with it.
        "bf16" uses bf16 for inference too: on a CPU with native bf16, ``transform`` ran 1.4-2.7x
        as fast (2-2.7x for informative embeddings; docs/benchmarks.md), at the cost of
        embeddings that move with their batch neighbours (latent ones by about 1e-3, informative
        ones by up to a few hundredths, on a scale of a few units). On a CPU without native
        bf16 (no AVX512-BF16 or AMX), PyTorch emulates it hundreds of times slower than fp32, so
        "bf16" warns there. "fp32" never uses bf16.
    n_threads : int, default=None
        torch threads for CPU work. ``None`` takes, at the start of each call, the cores that
        other programs leave idle (never more than ``torch.get_num_threads()``): torch's threads
        wait for one another, so a thread on a busy core stalls the rest. The count changes the
        last bits of a fit; set it for bit-for-bit repeats on a machine whose load varies.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, batch order and latent sampling.
    verbose : int, default=0
        0 is silent; above 0, one line per training epoch on stderr.
    errors : {"raise", "nan"}, default="raise"
        Bad items (unparsable SMILES, non-molecules, too long): "raise" raises an error naming
        the first bad item's index and value; "nan" gives each a NaN row (and ``fit`` skips them).

    Attributes
    ----------
    model_ : CMIMModel
        The trained network, in eval mode, on ``device_``.
    vocabulary_ : Vocabulary
    standardizer_ : Standardizer
    device_ : torch.device
    precision_ : str
        "bf16" or "fp32": the training precision, as resolved from ``precision`` on ``device_``.
    history_ : list of dict
        Per training epoch: mean ``total``, ``rec``, ``mim``, ``con`` losses, ``seconds``,
        ``molecules_per_s`` and ``tokens_per_s``. Empty when ``fit`` trained nothing.
    latent_prior_ : LatentPrior or None
        The distribution :meth:`sample` draws from by default: a diagonal Gaussian fitted to the
        latent means of the training molecules (at most 10,000 of them, drawn with
        ``random_state``), or the one a pretrained model carries when ``fit`` trained nothing.
        ``None`` when neither exists (a pretrained directory written without one and fewer than
        two usable molecules in X).

    Notes
    -----
    **Threads and processes.** On the CPU torch runs each operation on a team of threads that
    wait for one another. With ``n_threads=None`` each call (``fit``, ``transform``,
    ``inverse_transform``, ``score``, ``sample``) runs on as many threads as there are cores that
    other programs leave idle when it starts, at most ``torch.get_num_threads()``, and gives
    torch's setting back afterwards (the choice is made by reading Linux's CPU counters for 50
    ms and stands for 5 s; elsewhere torch's own count is used). Under scikit-learn's ``n_jobs``
    (``GridSearchCV``, ``cross_val_score`` ...) joblib's default loky backend starts each worker
    process with ``OMP_NUM_THREADS = cpu_count() // n_jobs`` unless the variable is already
    set, torch sizes its thread pool from it, and so the workers share the cores without
    oversubscription. A fitted estimator may be shared by threads: ``transform``,
    ``inverse_transform``, ``score`` and ``sample`` only read it; ``fit`` must not overlap them.

    **Determinism on the CPU.** ``random_state`` fixes every bit of the model and its embeddings,
    in any process and through pickle or joblib, for the same thread count, CPU type and
    library versions; a GridSearchCV refit is the same model whatever its ``n_jobs``. What changes
    the last bits: the thread count (sums split differently: ~1e-7 in fp32, ~1e-3 in bf16), which
    under ``n_threads=None`` follows the machine's load, so set ``n_threads`` for bit-for-bit
    repeats (cross-validation scores under ``n_jobs=2`` can then still differ in the last digits
    from ``n_jobs=1``, whose single process has more threads); and the other molecules of a batch
    (padding and batch size change the kernels' blocking: ~1e-7 in fp32, ~1e-3 in bf16).
    ``random_state=None`` draws a seed from NumPy's global generator.

    **Determinism on a GPU.** Not bitwise by default. cuBLAS and cuDNN choose kernels by shape,
    GPU model and library version, and some backward kernels (the fused attention behind
    ``scaled_dot_product_attention`` among them) accumulate with atomic additions in a varying
    order, so two trainings with the same seed drift apart;
    ``torch.use_deterministic_algorithms(True)`` (with the cuBLAS workspace setting that
    PyTorch's reproducibility notes give for your version) removes the run-to-run part at some
    speed cost. Inference with the same batches on the same GPU and software usually repeats
    exactly, but a different batch composition, GPU model or library version changes the
    kernels and so the rounding; under bf16 autocast (the default where supported) every matmul
    rounds its inputs to 8 significant bits and reductions differ at ~1e-3. Use
    ``precision="fp32"`` and compare with a tolerance across machines.

    Examples
    --------
    >>> from sklearn_cmim import CMIMTransformer
    >>> smiles = ["CCO", "CCN", "c1ccccc1", "CC(=O)O"]
    >>> cmim = CMIMTransformer(d_model=32, d_ff=64, n_decoder_layers=1, n_encoder_layers=1,
    ...                        n_latents=1, latent_dim=8, max_epochs=2, random_state=0)
    >>> cmim.fit_transform(smiles).shape
    (4, 72)
    >>> cmim.set_params(embedding="latent").transform(["CCCO"]).shape
    (1, 8)

    A bad parameter is refused before any work, with an error naming it and its value:

    >>> try:
    ...     CMIMTransformer(embedding="mean").fit(smiles)
    ... except ValueError as error:
    ...     print(error)  # doctest: +ELLIPSIS
    The 'embedding' parameter of CMIMTransformer must be a str among {...}. Got 'mean' instead.
    """

    # scikit-learn's declarative parameter checks (an InvalidParameterError, both a ValueError and
    # a TypeError, names the parameter and the value). ``_check_params`` applies them before any
    # work, with the rules between parameters that they cannot state.
    _parameter_constraints: ClassVar[dict] = {
        "pretrained": [str, os.PathLike, None],
        "contrastive_weight": [_NON_NEGATIVE],
        "temperature": [_POSITIVE],
        "contrastive_positive": [StrOptions({"self", "mean"})],
        "d_model": [_POSITIVE_INT],
        "n_heads": [_POSITIVE_INT],
        "d_ff": [_POSITIVE_INT],
        "n_encoder_layers": [_POSITIVE_INT],
        "n_decoder_layers": [_POSITIVE_INT],
        "n_latents": [_POSITIVE_INT],
        "latent_dim": [_POSITIVE_INT],
        "dropout": [Range(Real, 0, 1, closed="left")],
        # <bos>, one token, <eos>; longer than the longest SMILES read is memory spent for nothing
        "max_length": [Range(Integral, 3, MAX_CHARACTERS + 2, closed="both")],
        "max_epochs": [_NON_NEGATIVE_INT],
        "batch_size": [_POSITIVE_INT],
        "learning_rate": [_POSITIVE],
        "weight_decay": [_NON_NEGATIVE],
        "mim_warmup_steps": [_NON_NEGATIVE_INT],
        "inference_batch_size": [_POSITIVE_INT],
        "embedding": [StrOptions(set(KINDS))],
        "informative_layers": [StrOptions(set(LAYERS))],
        "informative_pooling": [StrOptions(set(POOLINGS))],
        "informative_with_latent": ["boolean"],
        "standardizer": [Standardizer, None],
        "device": [str, torch.device, None],
        "precision": [StrOptions({"auto", "bf16", "fp32"})],
        "n_threads": [_POSITIVE_INT, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "errors": [StrOptions(set(ERRORS))],
    }

    def __init__(self, *, pretrained=None, contrastive_weight=1.0, temperature=0.1,
                 contrastive_positive="self", d_model=256, n_heads=4, d_ff=1024,
                 n_encoder_layers=2, n_decoder_layers=4, n_latents=8, latent_dim=32,
                 dropout=0.1, max_length=128, max_epochs=10, batch_size=64, learning_rate=5e-4,
                 weight_decay=1e-3, mim_warmup_steps=1000, inference_batch_size=256,
                 embedding="informative", informative_layers="last", informative_pooling="mean_max",
                 informative_with_latent=True, standardizer=None, device=None, precision="auto",
                 n_threads=None, random_state=None, verbose=0, errors="raise"):
        self.pretrained = pretrained
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.contrastive_positive = contrastive_positive
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_ff = d_ff
        self.n_encoder_layers = n_encoder_layers
        self.n_decoder_layers = n_decoder_layers
        self.n_latents = n_latents
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.max_length = max_length
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.mim_warmup_steps = mim_warmup_steps
        self.inference_batch_size = inference_batch_size
        self.embedding = embedding
        self.informative_layers = informative_layers
        self.informative_pooling = informative_pooling
        self.informative_with_latent = informative_with_latent
        self.standardizer = standardizer
        self.device = device
        self.precision = precision
        self.n_threads = n_threads
        self.random_state = random_state
        self.verbose = verbose
        self.errors = errors

    # ------------------------------------------------------- checks and the fitted state
    def _check_params(self) -> None:
        """``_parameter_constraints``, then the rules between parameters that they cannot state."""
        self._validate_params()
        # With ``pretrained`` the architecture is the pretrained model's; these are not used.
        if self.pretrained is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model must be a multiple of n_heads, got d_model={self.d_model!r} "
                             f"and n_heads={self.n_heads!r}")
        if isinstance(self.device, str):
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"device must name a torch device such as 'cpu', 'cuda' or "
                                 f"'cuda:1', got {self.device!r}") from None

    def _check_fitted(self) -> None:
        """Fitted, and the parameters inference reads (which ``set_params`` may have changed) valid."""
        check_is_fitted(self, "model_")
        validate_parameter_constraints(
            self._parameter_constraints, {name: getattr(self, name) for name in _INFERENCE_PARAMETERS},
            caller_name=type(self).__name__)

    def _set_fitted(self, model, vocabulary, standardizer, device, precision, history, latent_prior,
                    pretrained_metadata: dict) -> None:
        self.model_ = model.eval()
        self.vocabulary_ = vocabulary
        self.standardizer_ = standardizer
        self.device_ = device
        self.precision_ = precision
        self.history_ = history
        self.latent_prior_ = latent_prior
        # A loaded model's own record (corpora, pretraining, learning curve), for save_pretrained.
        self._pretrained_metadata = pretrained_metadata

    # ---------------------------------------------- what fitting, embedding and decoding share
    def _embedding_spec(self) -> EmbeddingSpec:
        return EmbeddingSpec(self.embedding, self.informative_layers, self.informative_pooling,
                             self.informative_with_latent)

    def _n_features_out(self) -> int:
        return len(self.get_feature_names_out())

    def _inference_precision(self) -> str:
        """bf16 for inference only when asked for by name, whatever the model was trained in:
        under "auto", inference runs in fp32, whose rounding does not depend on how molecules
        are batched."""
        return "bf16" if self.precision == "bf16" else "fp32"

    def _encode(self, X):
        self._check_fitted()
        encoded = encode_items(as_items(X), self.standardizer_, self.vocabulary_,
                               self.model_.config.max_length, self.errors)
        encoded.warn_unknown()
        return encoded

    def _embed(self, encoded, spec: EmbeddingSpec, n_features: int) -> np.ndarray:
        """``spec``'s embedding of encoded molecules; NaN rows for bad ones."""
        with cpu_threads(self.n_threads, self.device_):
            return embed_sequences(self.model_, encoded.sequences, spec, n_features,
                                   self.inference_batch_size, self.device_, self._inference_precision())

    def _latent_means(self, encoded) -> np.ndarray:
        """Latent means of encoded molecules whatever ``embedding`` says; NaN rows for bad ones."""
        config = self.model_.config
        return self._embed(encoded, EmbeddingSpec("latent"), config.n_latents * config.latent_dim)
