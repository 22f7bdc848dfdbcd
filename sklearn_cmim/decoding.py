"""Decoding and sampling: the generative methods of :class:`~sklearn_cmim.CMIMTransformer`.

``inverse_transform`` decodes latent vectors to SMILES, ``sample`` decodes latents drawn from the
fitted latent prior or near given molecules, and ``score`` measures how many molecules decode back to
themselves. The helpers these methods share with fitting and embedding belong to the estimator
itself (``sklearn_cmim/transformer.py``).
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils import check_random_state

from .chem.inputs import check_n_samples
from .chem.standardize import canonical_smiles
from .nn.device import cpu_threads
from .nn.inference import decode_latents
from .nn.sampling import DEFAULT_SIGMA

SAMPLE_BLOCK = 4096  # latents drawn and decoded at a time by sample(): a few MB each

__all__ = ["DecodingMixin"]


class DecodingMixin:
    """``inverse_transform``, ``sample`` and ``score`` of CMIMTransformer."""

    def inverse_transform(self, X):
        """Decode latent vectors to SMILES by greedy decoding.

        Parameters
        ----------
        X : array-like of shape (n_samples, K x D) or the informative width
            Latent means, or informative embeddings that start with them.

        Returns
        -------
        smiles : ndarray of str (object), shape (n_samples,)
            ``None`` for NaN rows when ``errors="nan"``, and for a latent the model decodes to no
            finished SMILES (no end within its ``max_length`` positions, or a special token such
            as ``<unk>`` before the end). A decoded string may be an invalid SMILES.

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
        with np.errstate(over="ignore"):  # reported below, naming the row
            Z = np.asarray(X, dtype=np.float32)
        config = self.model_.config
        n_latent = config.n_latents * config.latent_dim
        has_latent = self.embedding == "latent" or self.informative_with_latent
        if Z.ndim != 2 or Z.shape[1] not in (n_latent, self._n_features_out()):
            raise ValueError(f"expected latent vectors of shape (n, {n_latent}) or embeddings "
                             f"that start with them, got shape {Z.shape}")
        if not has_latent and self._n_features_out() == n_latent:
            # Latent-free embeddings as wide as a latent vector: what Z holds cannot be told apart.
            raise ValueError(f"this estimator's embeddings hold no latent part (informative_with_latent="
                             f"False) yet are {n_latent} wide, as its latent vectors are, so Z is "
                             "ambiguous: set embedding='latent' to decode latent vectors")
        if Z.shape[1] != n_latent and not has_latent:
            raise ValueError(f"these embeddings hold no latent part to decode (informative_with_latent="
                             f"False): pass latent vectors of shape (n, {n_latent}), from "
                             "embedding='latent'")
        Z = Z[:, :n_latent]
        bad = ~np.isfinite(Z).all(axis=1)
        if bad.any() and self.errors == "raise":
            row = int(np.flatnonzero(bad)[0])
            # A finite value beyond float32's range becomes inf here: say so, not "non-finite".
            overflowed = np.isfinite(np.asarray(X, dtype=np.float64)[row, :n_latent]).all()
            why = "values beyond float32's range" if overflowed else "non-finite values"
            raise ValueError(f"X[{row}] holds {why}; no molecule decodes from it "
                             "(pass errors='nan' to get None for it instead)")
        return self._decode(Z, bad)

    def _decode(self, Z: np.ndarray, skip: np.ndarray) -> np.ndarray:
        with cpu_threads(self.n_threads, self.device_):
            return decode_latents(self.model_, self.vocabulary_, Z, skip, self.inference_batch_size,
                                  self.device_, self._inference_precision())

    def sample(self, n_samples=1, random_state=None, *, around=None, sigma=DEFAULT_SIGMA, prior="fitted"):
        """Decode molecules from latents drawn from the model's latent prior, or near given molecules.

        The codes of real molecules fill a far smaller region than N(0, I), so by default draws
        come from ``latent_prior_``, a Gaussian fitted to the latent means of the training
        molecules and drawn at a fraction of its spread: with the bundled models a third to a half
        of them decode to valid molecules, nearly none in the training corpora (against 0.5-1.6% from
        N(0, I); see their model cards). Sampling ``around`` known molecules keeps nearly all
        decodings valid at the default ``sigma``.

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
            Noise scale around each molecule, in latent units: the standard prior N(0, I)'s standard
            deviation is 1 (the bundled models' fitted prior's about 0.1). With the
            `-broad` models 0.07 keeps about 95% of the decodings valid, most of them the molecule
            itself; 0.1 keeps about 60% valid, over a third of them new molecules.
        prior : {"fitted", "standard"}, default="fitted"
            Without ``around``: draw from ``latent_prior_`` ("fitted") or from N(0, I), the prior
            the model was trained against ("standard").

        Returns
        -------
        smiles : ndarray of str (object), shape (n_samples,) or (len(around) * n_samples,)
            Greedy decodings, the samples of the first molecule of ``around`` first; a string may
            be an invalid SMILES, and ``None`` marks a decoding the model did not finish (see
            :meth:`inverse_transform`).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        ValueError
            If ``n_samples`` is not a positive integer, ``sigma`` is negative, not finite or so
            large that the latents overflow, ``prior`` is neither option, ``prior="fitted"`` finds
            no ``latent_prior_``, or a parameter that inference reads is invalid, or, with
            ``errors="raise"``, at the first bad item of ``around``.

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
        # NaN fails both comparisons; True is a Real to Python, and no one means a noise of 1.0.
        if isinstance(sigma, bool) or not (isinstance(sigma, Real) and 0 <= sigma < np.inf):
            raise ValueError(f"sigma must be a finite non-negative number, got {sigma!r}")
        if prior not in ("fitted", "standard"):
            raise ValueError(f"prior must be 'fitted' or 'standard', got {prior!r}")
        rng = check_random_state(random_state)
        config = self.model_.config
        if around is not None:
            means = self._latent_means(self._encode(around))
            n_rows = len(means) * n_samples
        elif prior == "fitted" and self.latent_prior_ is None:
            raise ValueError("this model carries no fitted latent prior (a pretrained directory "
                             "written without one, fitted to fewer than 2 molecules): pass "
                             "prior='standard', or fit on more molecules")
        else:
            n_rows = n_samples
        out = np.empty(n_rows, dtype=object)
        # Drawn and decoded a block at a time, so that the latents in memory do not grow with
        # n_samples. The draws come in the order one draw of every row would give, and a block is a
        # whole number of inference batches, so the blocks change no decoding, in bf16 either.
        block = self.inference_batch_size * max(1, SAMPLE_BLOCK // self.inference_batch_size)
        for start in range(0, n_rows, block):
            rows = np.arange(start, min(start + block, n_rows))
            if around is not None:
                centres = means[rows // n_samples]
                z = centres + sigma * rng.standard_normal(centres.shape)
            elif prior == "standard":
                z = rng.standard_normal((len(rows), config.n_latents * config.latent_dim))
            else:
                z = self.latent_prior_.draw(len(rows), rng)
            with np.errstate(over="ignore"):
                z = z.astype(np.float32)
            bad = ~np.isfinite(z).all(axis=1)  # NaN rows: bad molecules of ``around``
            if around is not None and (bad & np.isfinite(centres).all(axis=1)).any():
                raise ValueError(f"sigma={sigma!r} is too large: the latents it draws overflow float32")
            if around is None and bad.any():
                raise ValueError("the latent prior draws latents that overflow float32: its std or "
                                 "temperature is far too large")
            out[rows] = self._decode(z, bad)
        return out

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
