"""Saving and loading: how :class:`~sklearn_cmim.CMIMTransformer` keeps its fitted model outside
the process, as a model directory (``save_pretrained``, read back by ``from_pretrained`` or
``pretrained=``) or inside a pickle.

The directories themselves are :mod:`sklearn_cmim.persistence`'s. The parameters and the fitted
attributes belong to the estimator itself (``sklearn_cmim/transformer.py``).
"""

from __future__ import annotations

import inspect
import io
from typing import TYPE_CHECKING

from sklearn.utils.validation import check_is_fitted

from .nn.device import resolve_device, resolve_precision
from .persistence import (
    Pretrained,
    build_model,
    load_pretrained,
    load_weights,
    save_pretrained,
    weights_to_bytes,
)

if TYPE_CHECKING:
    from .transformer import CMIMTransformer

__all__ = ["SavingMixin"]


class SavingMixin:
    """``from_pretrained``, ``save_pretrained`` and pickling of CMIMTransformer."""

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
        if "pretrained" in params:  # it would be overridden by name_or_dir, silently
            raise TypeError("from_pretrained takes the model as name_or_dir, not as pretrained=")
        estimator = cls(**{"max_epochs": 0, **params, "pretrained": name_or_dir})
        estimator._check_params()  # before any work: nothing is loaded for a bad parameter
        device = resolve_device(estimator.device)
        start = load_pretrained(name_or_dir)
        estimator._set_fitted(start.model.to(device), start.vocabulary, start.standardizer, device,
                              resolve_precision(estimator.precision, device), [], start.latent_prior,
                              start.metadata)
        return estimator

    def save_pretrained(self, directory, half=False):
        """Write config, vocabulary and weights to ``directory`` (loadable by ``pretrained=``).

        The config also holds ``latent_prior_``, so the directory samples as this estimator does,
        and the metadata: a model loaded with ``pretrained=`` keeps its own (what it was trained on
        and how, its learning curve), with a ``fine_tuning`` record if ``fit`` trained it further;
        a model trained from scratch records its contrastive weight, temperature and ``history_``.

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
        metadata = {"contrastive_weight": self.contrastive_weight, "temperature": self.temperature,
                    "history": self.history_}
        loaded = getattr(self, "_pretrained_metadata", {})  # a pickle from before it was kept has none
        # A loaded model keeps its own record, with what fit trained on it, if anything, added.
        if loaded:
            metadata = {**loaded, "fine_tuning": metadata} if self.history_ else loaded
        return save_pretrained(directory, Pretrained(self.model_, self.vocabulary_, self.standardizer_,
                                                     metadata, self.latent_prior_), half=half)

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
        # A pickle from before a parameter existed gets that parameter's default.
        defaults = inspect.signature(type(self)).parameters
        for name in self._get_param_names():
            state.setdefault(name, defaults[name].default)
        super().__setstate__(state)
        if config is not None:
            self.__dict__.setdefault("latent_prior_", None)  # pickled before fits kept one
            self.device_ = resolve_device(self.device_)
            state_dict = load_weights(io.BytesIO(weights), "the pickled estimator")
            self.model_ = build_model(config, state_dict, "the pickled estimator").to(self.device_)
            # precision_ records what training used; inference follows ``precision`` alone, so a
            # loaded estimator embeds as the pickled one did.
            self.__dict__.setdefault("precision_", resolve_precision(self.precision, self.device_))
