"""``CMIMTransformer``: cMIM molecular embeddings as a scikit-learn transformer."""

from __future__ import annotations

import io
import os
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from .chem.inputs import (
    ERRORS,
    MoleculeInputMixin,
    as_items,
    check_n_samples,
    encode_items,
    encode_smiles,
    standardize_items,
)
from .chem.standardize import Standardizer, canonical_smiles
from .chem.tokenizer import Vocabulary
from .nn.device import resolve_device, resolve_precision
from .nn.embeddings import KINDS, LAYERS, POOLINGS, EmbeddingSpec
from .nn.inference import decode_latents, embed_sequences
from .nn.model import CMIMModel, ModelConfig
from .nn.sampling import DEFAULT_SIGMA
from .persistence import (
    Pretrained,
    build_model,
    load_pretrained,
    load_weights,
    save_pretrained,
    weights_to_bytes,
)
from .training.fit import TrainSettings, fit_model

__all__ = ["CMIMTransformer"]

_POSITIVE_INT = Interval(Integral, 1, None, closed="left")
_NON_NEGATIVE_INT = Interval(Integral, 0, None, closed="left")
_NON_NEGATIVE = Interval(Real, 0, None, closed="left")
_POSITIVE = Interval(Real, 0, None, closed="neither")

# What the methods of a fitted estimator read: checked again by them, because ``set_params`` may
# change these after ``fit`` (``set_params(embedding="latent").transform(X)``).
_INFERENCE_PARAMETERS = ("embedding", "informative_layers", "informative_pooling",
                         "informative_with_latent", "inference_batch_size", "precision", "errors")


class CMIMTransformer(MoleculeInputMixin, TransformerMixin, BaseEstimator):
    """Learned molecular embeddings from a contrastive Mutual Information Machine (cMIM).

    A probabilistic encoder-decoder over SMILES (Perceiver encoder, Gaussian latent, causal
    Transformer decoder) trained with the A-MIM loss plus an augmentation-free contrastive term.
    ``transform`` maps molecules to embeddings, ``inverse_transform`` decodes latent vectors back
    to SMILES, and ``score`` is the exact reconstruction accuracy.

    Parameters
    ----------
    pretrained : str or path, default=None
        A bundled model name (see :func:`sklearn_cmim.list_pretrained`) or a directory written by
        :meth:`save_pretrained`. When given, ``fit`` starts from it and the architecture
        parameters below (``d_model`` ... ``max_length``) and ``standardizer`` are taken from it;
        with ``max_epochs=0`` ``fit`` only loads it. ``None`` trains from scratch on X.
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
        "bf16" uses bf16 for inference too: on a CPU with native bf16, ``transform`` ran 2-2.6x as
        fast (docs/benchmarks.md), at the cost of embeddings that move by about 1e-3 with their
        batch neighbours. "fp32" never uses bf16.
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

    Notes
    -----
    **Threads and processes.** On the CPU torch runs each operation on
    ``torch.get_num_threads()`` threads; the estimator leaves that number alone. Under
    scikit-learn's ``n_jobs`` (``GridSearchCV``, ``cross_val_score`` ...) joblib's default loky
    backend starts each worker process with ``OMP_NUM_THREADS = cpu_count() // n_jobs`` unless
    the variable is already set, and torch sizes its thread pool from it, so the workers share the
    cores without oversubscription. threadpoolctl, scikit-learn's other thread limiter, reaches
    torch only through the OpenMP runtime torch was built with (the Linux CPU wheels' libgomp)
    and only in the calling thread; within one process (joblib's threading backend, your own
    threads) ``torch.set_num_threads`` is the direct way. A fitted estimator may be shared by
    threads: ``transform``, ``inverse_transform``, ``score`` and ``sample`` only read it; ``fit``
    must not overlap them.

    **Determinism on the CPU.** ``random_state`` fixes every bit of the model and its embeddings,
    in any process and through pickle or joblib, for the same torch thread count, CPU type and
    library versions; a GridSearchCV refit is the same model whatever its ``n_jobs``. What changes
    the last bits: the thread count (sums split differently: ~1e-7 in fp32, ~1e-3 in bf16, so
    cross-validation scores under ``n_jobs=2`` can differ in the last digits from ``n_jobs=1``
    unless every process runs the same number of threads), and the other molecules of a batch
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
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "max_length": [Interval(Integral, 3, None, closed="left")],  # <bos>, one token, <eos>
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
                 random_state=None, verbose=0, errors="raise"):
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
        self.random_state = random_state
        self.verbose = verbose
        self.errors = errors

    # ------------------------------------------------------------------ fitting
    @classmethod
    def from_pretrained(cls, name_or_dir, **params) -> CMIMTransformer:
        """A fitted estimator holding a pretrained model: ready to transform, decode and sample.

        The same as ``CMIMTransformer(pretrained=name_or_dir, max_epochs=0, **params)`` after a
        ``fit``, without molecules to fit on. The estimator keeps those parameters, so a clone of
        it in a ``Pipeline`` or ``GridSearchCV`` loads the same model again when fitted (or
        fine-tunes it, if ``params`` set ``max_epochs``).

        Parameters
        ----------
        name_or_dir : str or path
            A bundled model's name (:func:`~sklearn_cmim.list_pretrained`) or a directory written
            by :meth:`save_pretrained`, ``cmim pretrain`` or ``cmim export``.
        **params
            Other parameters of the estimator (``embedding``, ``device``, ``errors`` ...).

        Returns
        -------
        estimator : CMIMTransformer

        Raises
        ------
        FileNotFoundError
            If ``name_or_dir`` is neither a bundled model nor a model directory.
        ValueError
            If a parameter is invalid.

        Examples
        --------
        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer.from_pretrained("cmim-broad", embedding="latent")
        >>> cmim.transform(["CCOc1ccccc1"]).shape
        (1, 256)
        >>> cmim.get_params()["pretrained"], cmim.get_params()["max_epochs"]
        ('cmim-broad', 0)
        """
        estimator = cls(**{"max_epochs": 0, **params, "pretrained": name_or_dir})
        estimator._check_params()  # before any work: nothing is loaded for a bad parameter
        device = resolve_device(estimator.device)
        start = load_pretrained(name_or_dir)
        estimator._set_fitted(start.model.to(device), start.vocabulary, start.standardizer, device,
                              resolve_precision(estimator.precision, device), [])
        return estimator

    def fit(self, X, y=None):
        """Train the model on the molecules in X (from scratch, or from ``pretrained``).

        Parameters
        ----------
        X : sequence of str or rdkit.Chem.Mol
            SMILES strings or molecules: a list, 1-D array, (n, 1) array or pandas Series.
        y : ignored

        Returns
        -------
        self : CMIMTransformer
            The fitted estimator.

        Raises
        ------
        ValueError
            If a parameter is invalid, if no molecule of X is usable, or, with ``errors="raise"``,
            at the first bad item (the message names its index).
        TypeError
            With ``errors="raise"``, if an item is neither a SMILES string nor an RDKit ``Mol``.
        FileNotFoundError
            If ``pretrained`` is neither a bundled model nor a model directory.

        Examples
        --------
        A tiny model trained from scratch; ``history_`` holds one record per epoch:

        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer(d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1,
        ...                        n_decoder_layers=1, n_latents=1, latent_dim=8, max_epochs=2,
        ...                        random_state=0)
        >>> cmim = cmim.fit(["CCO", "CCN", "c1ccccc1", "CC(=O)O"])
        >>> [record["epoch"] for record in cmim.history_]
        [1, 2]
        >>> cmim.transform(["CCCO"]).shape
        (1, 72)

        With ``pretrained`` and ``max_epochs=0``, ``fit`` only loads the model (X just has to
        be usable):

        >>> bundled = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(["CCO"])
        >>> bundled.history_, bundled.model_.config.n_latents
        ([], 8)
        """
        self._fit(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit to the molecules in X, then embed them: ``fit(X).transform(X)``, reading X once.

        X is standardised and tokenised once for both steps, so tokens the model does not know
        are reported in one warning, not two.

        Parameters
        ----------
        X : sequence of str or rdkit.Chem.Mol
            As for :meth:`fit`.
        y : ignored

        Returns
        -------
        embeddings : ndarray of shape (n_samples, n_features), float32
            As :meth:`transform` gives them: NaN rows for bad items when ``errors="nan"``.

        Raises
        ------
        ValueError, TypeError, FileNotFoundError
            As for :meth:`fit`.

        Examples
        --------
        >>> import warnings
        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer(pretrained="cmim-broad", max_epochs=0, embedding="latent")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     X = cmim.fit_transform(["CCO", "C[Te]C"])  # no tellurium in its vocabulary
        >>> X.shape, len(caught)
        ((2, 256), 1)
        """
        encoded = self._fit(X)
        return self._embed(encoded, self._embedding_spec(), self._n_features_out())

    def _fit(self, X):
        """Fit; returns X as encoded for the fitted model, for ``fit_transform`` to embed."""
        self._check_params()  # before any work: nothing is loaded or trained for a bad parameter
        items = as_items(X)
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device)
        if self.pretrained is not None:
            start = load_pretrained(self.pretrained)
            vocabulary, standardizer = start.vocabulary, start.standardizer
            encoded = encode_items(items, standardizer, vocabulary,
                                   start.model.config.max_length, self.errors)
            encoded.warn_unknown()
        else:
            standardizer = self.standardizer or Standardizer()
            smiles = standardize_items(items, standardizer, self.errors, self.max_length)
            vocabulary = Vocabulary.build(s for s in smiles if s is not None)
            encoded = encode_smiles(smiles, vocabulary)
        sequences = [s for s in encoded.sequences if s is not None]
        if not sequences:
            raise ValueError("none of the molecules in X is usable (see errors='raise' for why)")

        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            if self.pretrained is not None:
                model = start.model
            else:
                model = CMIMModel(self._model_config(len(vocabulary)))
            model.to(device)
            history = []
            if self.max_epochs > 0:
                history = fit_model(model, sequences, self._train_settings(), device, precision,
                                    np.random.default_rng(seed), self.verbose)
        # Attributes are set only now, so an interrupted or failed fit leaves the estimator as it was.
        self._set_fitted(model, vocabulary, standardizer, device, precision, history)
        return encoded

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

    def _set_fitted(self, model, vocabulary, standardizer, device, precision, history) -> None:
        self.model_ = model.eval()
        self.vocabulary_ = vocabulary
        self.standardizer_ = standardizer
        self.device_ = device
        self.precision_ = precision
        self.history_ = history

    def _model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size, d_model=self.d_model, n_heads=self.n_heads, d_ff=self.d_ff,
            n_encoder_layers=self.n_encoder_layers, n_decoder_layers=self.n_decoder_layers,
            n_latents=self.n_latents, latent_dim=self.latent_dim, max_length=self.max_length,
            dropout=self.dropout,
        )

    def _train_settings(self) -> TrainSettings:
        return TrainSettings(
            max_epochs=self.max_epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            mim_warmup_steps=self.mim_warmup_steps, contrastive_weight=self.contrastive_weight,
            temperature=self.temperature, contrastive_positive=self.contrastive_positive,
        )

    def _embedding_spec(self) -> EmbeddingSpec:
        return EmbeddingSpec(self.embedding, self.informative_layers, self.informative_pooling,
                             self.informative_with_latent)

    # ---------------------------------------------------------------- embedding
    def _encode(self, X):
        self._check_fitted()
        encoded = encode_items(as_items(X), self.standardizer_, self.vocabulary_,
                               self.model_.config.max_length, self.errors)
        encoded.warn_unknown()
        return encoded

    def _embed(self, encoded, spec: EmbeddingSpec, n_features: int) -> np.ndarray:
        """``spec``'s embedding of encoded molecules; NaN rows for bad ones."""
        return embed_sequences(self.model_, encoded.sequences, spec, n_features,
                               self.inference_batch_size, self.device_, self._inference_precision())

    def _latent_means(self, encoded) -> np.ndarray:
        """Latent means of encoded molecules whatever ``embedding`` says; NaN rows for bad ones."""
        config = self.model_.config
        return self._embed(encoded, EmbeddingSpec("latent"), config.n_latents * config.latent_dim)

    def transform(self, X):
        """Embed molecules.

        Parameters
        ----------
        X : sequence of str or rdkit.Chem.Mol

        Returns
        -------
        embeddings : ndarray of shape (n_samples, n_features), float32
            NaN rows for bad items when ``errors="nan"``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        ValueError, TypeError
            If a parameter that inference reads (``embedding`` ... ``errors``, which
            ``set_params`` may have changed since ``fit``) is invalid, or, with
            ``errors="raise"``, at the first bad item (the message names its index).

        Examples
        --------
        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(["CCO"])
        >>> X = cmim.transform(["CCO", "c1ccccc1"])
        >>> X.shape, X.dtype
        ((2, 1024), dtype('float32'))
        >>> cmim.set_params(embedding="latent").transform(["CCO", "c1ccccc1"]).shape
        (2, 256)

        With ``errors="nan"`` an unreadable item gets a NaN row instead of an error:

        >>> import numpy as np
        >>> X = cmim.set_params(errors="nan").transform(["CCO", "not a molecule"])
        >>> np.isnan(X).all(axis=1)
        array([False,  True])
        """
        encoded = self._encode(X)
        return self._embed(encoded, self._embedding_spec(), self._n_features_out())

    def _n_features_out(self) -> int:
        return len(self.get_feature_names_out())

    def get_feature_names_out(self, input_features=None):
        """Names of the embedding columns: ``latent*``, then ``decoder_mean*``/``decoder_max*``.

        Parameters
        ----------
        input_features : ignored
            Present for scikit-learn's API; X holds molecules, not named columns.

        Returns
        -------
        names : ndarray of str (object), shape (n_features,)
            One name per column of :meth:`transform`'s output, for the current ``embedding``
            settings.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        ValueError
            If a parameter that inference reads is invalid, as for :meth:`transform`.

        Examples
        --------
        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(["CCO"])
        >>> names = cmim.get_feature_names_out()
        >>> len(names), names[0], names[-1]
        (1024, 'latent0', 'decoder_max383')
        >>> cmim.set_params(embedding="latent").get_feature_names_out()[-1]
        'latent255'
        """
        self._check_fitted()
        config = self.model_.config
        names = self._embedding_spec().feature_names(config.n_latents * config.latent_dim,
                                                     config.d_model)
        return np.asarray(names, dtype=object)

    # ----------------------------------------------------------------- decoding
    def inverse_transform(self, X):
        """Decode latent vectors to SMILES by greedy decoding.

        Parameters
        ----------
        X : array-like of shape (n_samples, K x D) or the informative width
            Latent means, or informative embeddings that start with them.

        Returns
        -------
        smiles : ndarray of str (object), shape (n_samples,)
            ``None`` for NaN rows when ``errors="nan"``. A decoded string may be an invalid SMILES.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        ValueError
            If a parameter that inference reads is invalid, if X has the wrong shape, if the
            embeddings hold no latent part (``informative_with_latent=False``), or, with
            ``errors="raise"``, if a row is not finite.

        Examples
        --------
        Latent means decode back to SMILES strings (how many match the input depends on the
        model: see :meth:`score`):

        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer(pretrained="cmim-broad", embedding="latent",
        ...                        max_epochs=0).fit(["CCO"])
        >>> smiles = cmim.inverse_transform(cmim.transform(["CCO", "c1ccccc1"]))
        >>> smiles.shape, all(isinstance(s, str) for s in smiles)
        ((2,), True)

        With ``errors="nan"`` a NaN row decodes to ``None``:

        >>> import numpy as np
        >>> cmim.set_params(errors="nan").inverse_transform(np.full((1, 256), np.nan))
        array([None], dtype=object)
        """
        self._check_fitted()
        Z = np.asarray(X, dtype=np.float32)
        config = self.model_.config
        n_latent = config.n_latents * config.latent_dim
        has_latent = self.embedding == "latent" or self.informative_with_latent
        if Z.ndim != 2 or Z.shape[1] not in (n_latent, self._n_features_out()) or not has_latent:
            raise ValueError(f"expected latent vectors of shape (n, {n_latent}) or embeddings "
                             f"that start with them, got shape {Z.shape}")
        Z = Z[:, :n_latent]
        bad = ~np.isfinite(Z).all(axis=1)
        if bad.any() and self.errors == "raise":
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"X[{row}] holds non-finite values; no molecule decodes from it "
                             "(pass errors='nan' to get None for it instead)")
        return self._decode(Z, bad)

    def _inference_precision(self) -> str:
        """bf16 for inference only when asked for by name: under "auto", inference runs in fp32, whose
        rounding does not depend on how molecules are batched."""
        return "bf16" if self.precision_ == "bf16" and self.precision == "bf16" else "fp32"

    def _decode(self, Z: np.ndarray, skip: np.ndarray) -> np.ndarray:
        return decode_latents(self.model_, self.vocabulary_, Z, skip, self.inference_batch_size,
                              self.device_, self._inference_precision())

    def sample(self, n_samples=1, random_state=None, *, around=None, sigma=DEFAULT_SIGMA):
        """Decode molecules from latents drawn from the prior N(0, I), or near given molecules.

        Few prior draws decode to valid molecules: the codes of real molecules fill a much tighter
        region than N(0, I) (0.5-1.6% are valid with the bundled models; see their model cards).
        Sampling ``around`` known molecules is the better option: at the default ``sigma``, nearly
        all decodings are valid.

        Parameters
        ----------
        n_samples : int, default=1
            Molecules to decode (per molecule of ``around``, when given).
        random_state : int, RandomState instance or None, default=None
            Seeds the latent draws (``None``: NumPy's global generator).
        around : sequence of str or rdkit.Chem.Mol, optional
            Draw around these molecules instead of from the prior: each one's latent mean plus
            ``sigma`` times N(0, I) noise. Bad items follow ``errors``: they raise, or, with
            ``errors="nan"``, their samples are ``None``.
        sigma : float, default=0.07
            Noise scale around each molecule, in units of the prior's standard deviation. With the
            `-broad` models 0.07 keeps about 95% of the decodings valid, most of them the molecule
            itself; 0.1 keeps about 60% valid, over a third of them new molecules.

        Returns
        -------
        smiles : ndarray of str (object), shape (n_samples,) or (len(around) * n_samples,)
            Greedy decodings, the samples of the first molecule of ``around`` first; a string may
            be an invalid SMILES.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        ValueError
            If ``n_samples`` is not a positive integer, ``sigma`` is negative or a parameter that
            inference reads is invalid, or, with ``errors="raise"``, at the first bad item of
            ``around``.

        Examples
        --------
        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(["CCO"])
        >>> smiles = cmim.sample(2, random_state=0)
        >>> smiles.shape, smiles.dtype
        ((2,), dtype('O'))

        The same ``random_state`` draws the same latents, so gives the same molecules:

        >>> list(cmim.sample(2, random_state=0)) == list(smiles)
        True

        Three molecules near each of two seeds; with ``sigma=0`` every draw is the seed's own
        latent mean, so its three decodings agree:

        >>> near = cmim.sample(3, random_state=0, around=["CCOc1ccccc1", "CC(=O)Nc1ccc(O)cc1"])
        >>> near.shape
        (6,)
        >>> len(set(cmim.sample(3, around=["CCOc1ccccc1"], sigma=0.0)))
        1
        """
        self._check_fitted()
        n_samples = check_n_samples(n_samples)
        if not (isinstance(sigma, Real) and sigma >= 0):
            raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
        rng = check_random_state(random_state)
        if around is None:
            config = self.model_.config
            z = rng.standard_normal((n_samples, config.n_latents * config.latent_dim))
        else:
            centres = np.repeat(self._latent_means(self._encode(around)), n_samples, axis=0)
            z = centres + sigma * rng.standard_normal(centres.shape)
        z = z.astype(np.float32)
        return self._decode(z, ~np.isfinite(z).all(axis=1))  # NaN rows: bad molecules of ``around``

    def score(self, X, y=None):
        """Exact reconstruction accuracy: share of molecules whose decoded latent mean gives back
        the same canonical SMILES (bad items are left out when ``errors="nan"``).

        Parameters
        ----------
        X : sequence of str or rdkit.Chem.Mol
            SMILES strings or molecules, as for :meth:`transform`.
        y : ignored

        Returns
        -------
        accuracy : float in [0, 1]

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        ValueError, TypeError
            If a parameter that inference reads is invalid, if no molecule of X is usable, or,
            with ``errors="raise"``, at the first bad item.

        Examples
        --------
        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(["CCO"])
        >>> accuracy = cmim.score(["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O"])
        >>> isinstance(accuracy, float), 0.0 <= accuracy <= 1.0
        (True, True)
        """
        encoded = self._encode(X)
        latent = self._latent_means(encoded)
        valid = encoded.valid
        if not valid.any():
            raise ValueError("none of the molecules in X is usable")
        decoded = self._decode(latent, ~valid)
        hits = [canonical_smiles(d) == canonical_smiles(s)
                for d, s, ok in zip(decoded, encoded.smiles, valid, strict=True) if ok]
        return float(np.mean(hits))

    # -------------------------------------------------------------- persistence
    def save_pretrained(self, directory, half=False):
        """Write config, vocabulary and weights to ``directory`` (loadable by ``pretrained=``).

        Parameters
        ----------
        directory : str or path
            Created if missing; the three files are written atomically into it.
        half : bool, default=False
            Store the weights in float16 (half the size; loaded back as float32).

        Returns
        -------
        directory : pathlib.Path

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        OSError
            If the directory cannot be written.

        Examples
        --------
        The directory loads back with ``pretrained=`` and gives the same embeddings:

        >>> import tempfile
        >>> import numpy as np
        >>> from sklearn_cmim import CMIMTransformer
        >>> cmim = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(["CCO"])
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = cmim.save_pretrained(tmp)
        ...     files = sorted(p.name for p in path.iterdir())
        ...     copy = CMIMTransformer(pretrained=tmp, max_epochs=0).fit(["CCO"])
        >>> files
        ['config.json', 'vocab.json', 'weights.pt']
        >>> np.array_equal(copy.transform(["c1ccccc1"]), cmim.transform(["c1ccccc1"]))
        True
        """
        check_is_fitted(self, "model_")
        metadata = {"contrastive_weight": self.contrastive_weight,
                    "temperature": self.temperature, "history": self.history_}
        return save_pretrained(directory, Pretrained(self.model_, self.vocabulary_,
                                                     self.standardizer_, metadata), half=half)

    def __getstate__(self):
        # The network travels as a plain tensor state dict (bytes) plus its config, so loading
        # never unpickles torch objects and works on a machine without the fitting device.
        state = dict(super().__getstate__())  # a copy: the base class may hand back __dict__ itself
        model = state.pop("model_", None)
        if model is not None:
            state["_model_config"] = model.config.to_dict()
            state["_model_weights"] = weights_to_bytes(model)
        return state

    def __setstate__(self, state):
        config, weights = state.pop("_model_config", None), state.pop("_model_weights", None)
        super().__setstate__(state)
        if config is not None:
            self.device_ = resolve_device(self.device_)
            state_dict = load_weights(io.BytesIO(weights), "the pickled estimator")
            self.model_ = build_model(config, state_dict, "the pickled estimator").to(self.device_)
            self.precision_ = resolve_precision(self.precision, self.device_)
