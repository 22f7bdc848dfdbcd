"""Property-guided optimisation of molecules in a cMIM latent space, with CMA-ES.

MolMIM's recipe: start from a molecule's latent mean, let CMA-ES propose codes around it, decode
each population with one batched greedy decoding, and score the decoded molecules with any
objective. Invalid decodings and molecules less similar to the seed than the threshold are
ranked below every feasible molecule (never an error), and the seed itself counts as a feasible
candidate, so the molecule returned for a seed never scores below it.

CMA-ES comes from the ``cma`` package, an optional extra: ``pip install 'sklearn-cmim[optimize]'``.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from numbers import Integral, Real

import numpy as np
from rdkit import Chem, DataStructs

from .chem.inputs import as_items, describe, token_problem
from .chem.properties import NORMALIZATION as NORMALIZATION  # re-exported: users import it from here
from .chem.properties import morgan_fingerprint, penalized_logp, qed, tanimoto_similarity
from .chem.standardize import MoleculeError, canonical_smiles
from .config import MAX_POPSIZE
from .objectives import OBJECTIVES as OBJECTIVES  # re-exported: the names the optimiser knows
from .objectives import as_objective, scores
from .progress import SHOW_AFTER, progress

__all__ = ["OBJECTIVES", "optimize_molecules", "penalized_logp", "qed", "tanimoto_similarity"]


def _import_cma():
    try:
        import cma
    except ImportError:
        raise ImportError("optimize_molecules needs the cma package (CMA-ES): "
                          "pip install 'sklearn-cmim[optimize]'") from None
    return cma


def _check_seeds(cmim, items: list, reference: str) -> list[tuple[str, Chem.Mol]]:
    """Each seed as the SMILES and RDKit Mol its search is measured against (``reference``: as
    given, or standardised as the model reads it), or an error naming the first bad one."""
    seeds = []
    for index, item in enumerate(items):
        if isinstance(item, Chem.Mol):
            item = Chem.MolToSmiles(item)
        if not isinstance(item, str):
            raise TypeError(f"seeds[{index}] = {describe(item)} is neither a SMILES string nor an RDKit Mol")
        mol = Chem.MolFromSmiles(item) if item.strip() else None
        if mol is None:
            raise ValueError(f"seeds[{index}] = {describe(item)} is not a SMILES RDKit can read")
        try:
            standard = cmim.standardizer_(item)
            problem = token_problem(standard, cmim.model_.config.max_length)
        except MoleculeError as error:
            problem = str(error)
        if problem:
            raise ValueError(f"seeds[{index}] = {describe(item)} cannot be encoded: {problem}")
        seeds.append((item, mol) if reference == "given" else (standard, Chem.MolFromSmiles(standard)))
    return seeds


def _seed_stream(random_state: int, smiles: str) -> np.random.SeedSequence:
    """A search's own random stream, from the random state and the seed molecule alone: a seed's
    result does not depend on the other seeds, nor on its place among them."""
    digest = hashlib.sha256(canonical_smiles(smiles).encode()).digest()
    return np.random.SeedSequence([random_state, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


class _Search:
    """CMA-ES around one seed's latent mean, and the best feasible molecule it has found."""

    def __init__(self, cma, index, smiles, mol, latent, score, *, similarity, budget, popsize, sigma0,
                 max_iter, random_state):
        rng = np.random.default_rng(random_state)
        self.owner = f"a candidate for seeds[{index}] = {describe(smiles)}"
        self.latent = latent
        self.fingerprint = morgan_fingerprint(mol)
        self.threshold, self.budget, self.max_iter = similarity, budget, max_iter
        # The draws come from this search's own generator (cma's "randn"), never from NumPy's
        # global one ("seed": nan leaves it alone), so a seed's result does not depend on the
        # other seeds. The fitness cma is told is ranks (see tell), whose best is always 0: its
        # tests of stalled fitness would stop every search after ten generations, so the budget
        # and max_iter decide instead.
        options = {"popsize": popsize, "seed": math.nan, "verbose": -9,
                   "randn": lambda n, dim: rng.standard_normal((n, dim)),
                   "tolfun": 0, "tolfunhist": 0, "tolfunrel": 0, "tolflatfitness": math.inf}
        self.es = cma.CMAEvolutionStrategy(latent.astype(float), sigma0, options)
        # canonical SMILES -> (similarity, score or None); the seed is known without a call.
        self.seen = {canonical_smiles(smiles): (1.0, score)}
        self.best = (score, smiles, 1.0)
        self.history = [score]
        self.n_scored = self.n_generations = 0
        self.unscorable = []  # candidates the objective gave no finite score

    @property
    def done(self) -> bool:
        return (self.n_scored >= self.budget or self.n_generations >= self.max_iter
                or bool(self.es.stop()))

    def ask(self) -> np.ndarray:
        self.candidates = np.asarray(self.es.ask())
        return self.candidates

    def to_score(self, decoded) -> list[str]:
        """Read the decoded molecules; return the new feasible ones to score, within the budget."""
        self.decoded, wanted = [], []
        for text in decoded:
            canonical = canonical_smiles(text) if text else None
            self.decoded.append(canonical)
            if canonical is None or canonical in self.seen:
                continue
            similarity = DataStructs.TanimotoSimilarity(
                self.fingerprint, morgan_fingerprint(Chem.MolFromSmiles(canonical)))
            self.seen[canonical] = (similarity, None)  # a feasible one's score comes in tell
            if similarity >= self.threshold and self.n_scored + len(wanted) < self.budget:
                wanted.append(canonical)
        return wanted

    def tell(self, scored: dict[str, float]) -> None:
        for canonical, score in scored.items():
            similarity = self.seen[canonical][0]
            if math.isnan(score):  # the objective could not score it: ranked as left unscored
                self.unscorable.append(canonical)
                continue
            self.seen[canonical] = (similarity, score)
            if score > self.best[0]:
                self.best = (score, canonical, similarity)
        self.n_scored += len(scored)
        keys = []
        for z, canonical in zip(self.candidates, self.decoded, strict=True):
            if canonical is None:  # invalid: back towards the seed
                keys.append((3, float(np.linalg.norm(z - self.latent))))
                continue
            similarity, score = self.seen.get(canonical, (0.0, None))
            if similarity < self.threshold:  # infeasible: towards the threshold
                keys.append((2, self.threshold - similarity))
            elif score is None:  # feasible, left unscored by the spent budget
                keys.append((1, 0.0))
            else:
                keys.append((0, -score))
        # CMA-ES uses ranks only: these keep feasible molecules above infeasible ones above invalid
        # ones, and ties (the same molecule decoded twice) are broken by draw order, which is random.
        order = sorted(range(len(keys)), key=lambda j: (keys[j], j))
        ranks = np.empty(len(keys))
        ranks[order] = np.arange(len(keys))
        self.es.tell(list(self.candidates), ranks.tolist())
        self.n_generations += 1
        self.history.append(self.best[0])


def _check_number(name, value, kind, low, high=math.inf, low_open=False):
    ok = isinstance(value, kind) and not isinstance(value, bool) and (
        (low < value if low_open else low <= value) and value <= high)
    if not ok:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        limit = f" and <= {high:g}" if high != math.inf else ""
        raise ValueError(f"{name} must be a {'number' if kind is Real else 'whole number'} {bound}{limit}, "
                         f"got {value!r}")
    return value


def optimize_molecules(cmim, seeds, objective, *, similarity=0.4, budget=100, popsize=None, sigma0=0.1,
                       max_iter=None, reference="standardised", positive_class=None, random_state=None,
                       verbose=0) -> dict:
    """Search the latent space around each seed molecule for similar molecules that score higher.

    For each seed, CMA-ES starts at the seed's latent mean with step size ``sigma0``; every
    generation's ``popsize`` codes are decoded together (one :meth:`~CMIMTransformer.inverse_transform`
    call for the populations of several seeds), and the new valid molecules at least ``similarity``
    similar to the seed are scored by ``objective``. Invalid decodings and dissimilar molecules are
    ranked below every feasible one instead of being scored; the seed is itself a feasible
    candidate, so each seed's best molecule scores at least as high as the seed.

    The model reads and writes molecules standardised (largest fragment, neutralised, without
    stereochemistry: its ``standardizer_``), so by default the seed is measured in that form too:
    a salt's parent is the seed, not an improvement on it.

    Parameters
    ----------
    cmim : CMIMTransformer
        A fitted estimator whose ``transform`` holds latent means (``embedding="latent"``, or
        informative embeddings with ``informative_with_latent=True``).
    seeds : sequence of str or rdkit.Chem.Mol
        The molecules to start from.
    objective : {"qed", "plogp"}, fitted estimator or callable
        What to maximise. A callable takes a list of SMILES and returns one finite number per
        molecule. A fitted estimator or pipeline that reads SMILES (e.g. ``CMIMTransformer`` then
        a regressor) is maximised through its ``predict``, a classifier through the probability
        of ``positive_class``. "qed" is :func:`qed`, "plogp" :func:`penalized_logp`.
    similarity : float in [0, 1], default=0.4
        Smallest Tanimoto similarity (Morgan radius 2, 2,048 bits) to the seed a molecule must
        have to count; 0 removes the constraint.
    budget : int, default=100
        Most molecules scored by ``objective`` per seed, the seed itself not counted. A molecule
        is scored once however often it is decoded; invalid and dissimilar ones are not scored,
        and one the objective gives no finite score counts as scored.
    popsize : int, optional
        Codes decoded per seed and generation, at most 10,000; ``None`` is CMA-ES's default,
        ``4 + 3 ln(n)`` for ``n`` latent dimensions (20 for the bundled models).
    sigma0 : float, default=0.1
        CMA-ES's initial step size in the latent space, in latent units (the standard prior N(0, I)'s
        standard deviation is 1; the bundled models' fitted prior's about 0.1); at most 10.
    max_iter : int, optional
        Most generations per seed, which bounds the decoding work when few decodings are new
        feasible molecules; ``None`` allows ``ceil(5 * budget / popsize)``.
    reference : {"standardised", "given"}, default="standardised"
        The form of each seed that its score, the similarity constraint and ``improvement`` are
        measured against: standardised as the model reads it, or as given (as published
        benchmarks that keep charges measure it; neutralising a salt or a charged amine then
        counts as an improvement).
    positive_class : label, optional
        For a classifier objective, the class whose probability is maximised; by default the
        second of two classes labelled 0/1, False/True or -1/1 (other labels must name it).
    random_state : int, RandomState instance or None, default=None
        Seeds every search; with an integer, the same call gives the same molecules (on the same
        hardware and library versions). Each seed's search draws from a stream of its own, made
        from the random state and the seed molecule, so its result does not depend on the other
        seeds or on its place among them.
    verbose : int, default=0
        Above 0, a progress bar over the seeds on stderr when stderr is a terminal.

    Returns
    -------
    results : dict of ndarrays, one entry per seed (``pandas.DataFrame(results)`` makes a table)
        ``seed`` (the seeds as given), ``smiles`` (the best molecule, canonical; the seed itself,
        in its ``reference`` form, if nothing scored higher), ``score``, ``seed_score``,
        ``improvement`` (``score - seed_score``, never negative), ``similarity`` (to the seed),
        ``n_scored`` (molecules scored),
        ``n_generations``, and ``history`` (the best score before the first and after each
        generation).

    Raises
    ------
    ImportError
        If the ``cma`` package is missing (``pip install 'sklearn-cmim[optimize]'``).
    sklearn.exceptions.NotFittedError
        If ``cmim`` is not fitted.
    ValueError, TypeError
        For an unknown or unusable objective (wrong number of scores, a non-finite score for a
        seed: the message names the molecule and its seed), a seed that cannot be read or encoded
        (the message names its index), or an out-of-range parameter. A decoded candidate the
        objective gives no finite score is passed over instead, with a ``UserWarning`` that
        counts them.

    Examples
    --------
    >>> from sklearn_cmim import CMIMTransformer
    >>> from sklearn_cmim.optimization import optimize_molecules
    >>> cmim = CMIMTransformer.from_pretrained("cmim-broad", embedding="latent")
    >>> results = optimize_molecules(cmim, ["CCOc1ccccc1"], "qed", budget=10, popsize=8,
    ...                              random_state=0)
    >>> list(results)[:6]
    ['seed', 'smiles', 'score', 'seed_score', 'improvement', 'similarity']
    >>> bool(results["improvement"][0] >= 0), bool(results["similarity"][0] >= 0.4)
    (True, True)
    >>> int(results["n_scored"][0]) <= 10
    True
    """
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted

    cma = _import_cma()
    check_is_fitted(cmim, "model_")
    score = as_objective(objective, positive_class)
    if reference not in ("standardised", "given"):
        raise ValueError(f"reference must be 'standardised' or 'given', got {reference!r}")
    similarity = float(_check_number("similarity", similarity, Real, 0.0, 1.0))
    budget = int(_check_number("budget", budget, Integral, 1))
    # In prior standard deviations: far beyond 10 no draw decodes, and CMA-ES's arithmetic overflows.
    sigma0 = float(_check_number("sigma0", sigma0, Real, 0.0, 10.0, low_open=True))
    config = cmim.model_.config
    n_latent = config.n_latents * config.latent_dim
    if popsize is None:
        popsize = 4 + int(3 * math.log(n_latent))
    popsize = int(_check_number("popsize", popsize, Integral, 2, MAX_POPSIZE))
    max_iter = math.ceil(5 * budget / popsize) if max_iter is None else max_iter
    max_iter = int(_check_number("max_iter", max_iter, Integral, 1))
    if not (cmim.embedding == "latent" or cmim.informative_with_latent):
        raise ValueError("cmim's embeddings hold no latent mean: use embedding='latent'")

    given = as_items(seeds, "seeds")
    seeds = _check_seeds(cmim, given, reference)
    latents = np.asarray(cmim.transform([s for s, _ in seeds]), dtype=float)[:, :n_latent]
    seed_scores = scores(score, [s for s, _ in seeds], [f"seeds[{i}]" for i in range(len(seeds))])
    state = int(check_random_state(random_state).randint(2**31))
    streams = [_seed_stream(state, smiles) for smiles, _ in seeds]
    settings = dict(similarity=similarity, budget=budget, popsize=popsize, sigma0=sigma0, max_iter=max_iter)

    finished = []
    # Several seeds' populations are decoded together (about one inference batch); their searches
    # are made chunk by chunk, as each holds an n x n covariance matrix.
    chunk = max(1, cmim.inference_batch_size // popsize)
    starts = range(0, len(seeds), chunk)
    for start in progress(starts, total=len(seeds), label="optimising seeds", after=SHOW_AFTER,
                          enabled=None if verbose else False,
                          size=lambda s: min(chunk, len(seeds) - s)):
        searches = [_Search(cma, i, *seeds[i], latents[i], seed_scores[i], random_state=streams[i],
                            **settings) for i in range(start, min(start + chunk, len(seeds)))]
        _run(cmim, searches, score)
        finished += searches
    if unscorable := list(dict.fromkeys(smiles for search in finished for smiles in search.unscorable)):
        warnings.warn(f"the objective gave no finite score for {len(unscorable)} candidate molecule(s), "
                      f"{unscorable[0]!r} first; the searches passed over them", UserWarning, stacklevel=2)

    return {"seed": _objects([s if isinstance(s, str) else Chem.MolToSmiles(s) for s in given]),
            "smiles": _objects([s.best[1] for s in finished]),
            "score": np.array([s.best[0] for s in finished]),
            "seed_score": seed_scores,
            "improvement": np.array([s.best[0] for s in finished]) - seed_scores,
            "similarity": np.array([s.best[2] for s in finished]),
            "n_scored": np.array([s.n_scored for s in finished]),
            "n_generations": np.array([s.n_generations for s in finished]),
            "history": _objects([np.array(s.history) for s in finished])}


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _run(cmim, searches: list[_Search], objective) -> None:
    """Run the searches generation by generation, decoding their populations together."""
    while active := [s for s in searches if not s.done]:
        populations = [s.ask() for s in active]
        decoded = cmim.inverse_transform(np.concatenate(populations).astype(np.float32))
        wanted, start = {}, 0
        for search, population in zip(active, populations, strict=True):
            wanted[search] = search.to_score(decoded[start:start + len(population)])
            start += len(population)
        # One objective call per generation, each molecule once whichever seeds found it.
        unique = {smiles: search.owner for search, found in wanted.items() for smiles in found}
        scored = dict(zip(unique, scores(objective, list(unique), list(unique.values()), finite=False),
                          strict=True)) if unique else {}
        for search, found in wanted.items():
            search.tell({smiles: float(scored[smiles]) for smiles in found})
