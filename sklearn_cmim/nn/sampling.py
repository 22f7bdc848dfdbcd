"""What :meth:`CMIMTransformer.sample` and ``cmim sample`` share, kept free of torch and RDKit so
that the command's ``--help`` can show it at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_SIGMA", "PRIOR_TEMPERATURE", "LatentPrior"]

# Noise scale around a molecule's latent mean, in latent units (N(0, I)'s standard deviation is 1). Taken
# from the validity-against-sigma curves of the bundled models' cards (docs/models/): the largest
# measured scale at which at least 90% of the decodings stay valid molecules. Most of them are
# still the molecule itself; a larger sigma gives more new molecules and fewer valid ones.
DEFAULT_SIGMA = 0.07

# How much of its fitted spread a newly fitted prior draws with. The bundled models carry their own,
# each chosen on validation draws as the one giving the most valid, unique, new molecules
# (scripts/bundled_models/latent_prior.py): 0.4 for cmim-broad, 0.2 for mim-broad. This one lies
# between them. Wider draws land between the clusters that real molecules form.
PRIOR_TEMPERATURE = 0.3


@dataclass(frozen=True)
class LatentPrior:
    """A diagonal Gaussian fitted to the latent means of a model's training molecules.

    A-MIM does not pull the codes of real molecules onto N(0, I): they fill a far smaller region,
    and few draws of N(0, I) decode to valid molecules. ``sample`` draws from this fit instead.

    Parameters
    ----------
    mean, std : ndarray of shape (K x D,)
        Per-dimension mean and standard deviation of the latent means.
    temperature : float
        Draws are ``mean + temperature * std * N(0, I)``.
    n_molecules : int
        How many molecules the fit read.

    Examples
    --------
    >>> import numpy as np
    >>> latents = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 4))
    >>> prior = LatentPrior.fit(latents, temperature=1.0)
    >>> prior.mean.round(0), prior.n_molecules
    (array([3., 3., 3., 3.]), 500)
    >>> prior.draw(2, np.random.default_rng(0)).shape
    (2, 4)
    >>> LatentPrior.from_dict(prior.to_dict()) == prior
    True
    """

    mean: np.ndarray
    std: np.ndarray
    temperature: float = PRIOR_TEMPERATURE
    n_molecules: int = 0

    def __post_init__(self):
        # Checked on every construction, dataclasses.replace included: a prior that draws NaN
        # latents would make sample() return nothing but None.
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        finite = np.isfinite(mean).all() and np.isfinite(std).all() and (std >= 0).all()
        if mean.ndim != 1 or mean.shape != std.shape or not finite:
            raise ValueError("a latent prior needs a finite mean and a finite, non-negative std of "
                             "one length")
        if isinstance(self.temperature, bool) or not 0 <= self.temperature < np.inf:
            raise ValueError(f"a latent prior's temperature must be finite and non-negative, "
                             f"got {self.temperature!r}")

    @classmethod
    def fit(cls, latents, temperature: float = PRIOR_TEMPERATURE) -> LatentPrior:
        """Fit to latent means, one row per molecule; rows that are not finite (bad molecules)
        are left out, and at least two must remain.

        Examples
        --------
        >>> import numpy as np
        >>> prior = LatentPrior.fit([[0.0, 1.0], [2.0, 1.0], [np.nan, 0.0]])
        >>> prior.mean, prior.std, prior.n_molecules
        (array([1., 1.]), array([1.41421356, 0.        ]), 2)
        """
        latents = np.asarray(latents, dtype=np.float64)
        latents = latents[np.isfinite(latents).all(axis=1)]
        if len(latents) < 2:
            raise ValueError(f"a latent prior needs the latent means of at least 2 molecules, "
                             f"got {len(latents)}")
        return cls(latents.mean(axis=0), latents.std(axis=0, ddof=1), float(temperature), len(latents))

    def draw(self, n: int, rng: np.random.RandomState | np.random.Generator) -> np.ndarray:
        """``n`` latent vectors, float32.

        Examples
        --------
        >>> import numpy as np
        >>> prior = LatentPrior(np.zeros(3), np.ones(3), temperature=0.0)
        >>> prior.draw(2, np.random.default_rng(0))  # at temperature 0, every draw is the mean
        array([[0., 0., 0.],
               [0., 0., 0.]], dtype=float32)
        """
        noise = rng.standard_normal((n, len(self.mean)))
        with np.errstate(over="ignore"):  # a draw beyond float32 becomes inf, which sample() reports
            return (self.mean + self.temperature * self.std * noise).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(),
                "temperature": self.temperature, "n_molecules": self.n_molecules}

    @classmethod
    def from_dict(cls, data: dict) -> LatentPrior:
        mean, std = np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64)
        return cls(mean, std, float(data["temperature"]), int(data["n_molecules"]))

    def __eq__(self, other) -> bool:
        return (isinstance(other, LatentPrior) and np.array_equal(self.mean, other.mean)
                and np.array_equal(self.std, other.std) and self.temperature == other.temperature
                and self.n_molecules == other.n_molecules)

    __hash__ = None
