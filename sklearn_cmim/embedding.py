"""Fitting and embedding: the scikit-learn transformer methods of :class:`~sklearn_cmim.CMIMTransformer`.

``fit`` trains the model (from scratch, or from ``pretrained``), ``transform`` embeds molecules
with it and ``fit_transform`` does both, reading X once. The parameters, the fitted attributes and
the helpers these methods share belong to the estimator itself (``sklearn_cmim/transformer.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils import check_random_state

from .chem.inputs import as_items, encode_items, encode_smiles, standardize_items
from .chem.standardize import Standardizer
from .chem.tokenizer import Vocabulary
from .nn.device import cpu_threads, resolve_device, resolve_precision
from .nn.inference import fit_latent_prior
from .nn.model import CMIMModel, ModelConfig
from .persistence import load_pretrained
from .training.fit import TrainSettings, fit_model

__all__ = ["EmbeddingMixin"]


class EmbeddingMixin(TransformerMixin):
    """``fit``, ``fit_transform``, ``transform`` and ``get_feature_names_out`` of CMIMTransformer.

    A ``TransformerMixin`` itself, because scikit-learn's ``set_output`` wraps only the
    ``transform`` and ``fit_transform`` that a subclass of it defines.
    """

    # ------------------------------------------------------------------ fitting
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
            history, rng = [], np.random.default_rng(seed)
            latent_prior = start.latent_prior if self.pretrained is not None else None
            with cpu_threads(self.n_threads, device):
                if self.max_epochs > 0:
                    history = fit_model(model, sequences, self._train_settings(), device, precision,
                                        rng, self.verbose)
                if self.max_epochs > 0 or latent_prior is None:  # the latent space is X's to describe
                    latent_prior = fit_latent_prior(model, sequences, self.inference_batch_size, device,
                                                    self._inference_precision(), rng)
        # Attributes are set only now, so an interrupted or failed fit leaves the estimator as it was.
        self._set_fitted(model, vocabulary, standardizer, device, precision, history, latent_prior,
                         start.metadata if self.pretrained is not None else {})
        return encoded

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

    # ---------------------------------------------------------------- embedding
    def transform(self, X):
        """Embed molecules.

        Parameters
        ----------
        X : sequence of str or rdkit.Chem.Mol
            SMILES strings or molecules, as for :meth:`fit`.

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
        return self._transform_encoded(self._encode(X))

    def _transform_encoded(self, encoded):
        """``transform``'s second step, for callers that keep the encoding (which items are bad)."""
        return self._embed(encoded, self._embedding_spec(), self._n_features_out())

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
