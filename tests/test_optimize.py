"""``optimize_molecules`` and ``cmim optimize`` on the bundled model, with cheap objectives."""

import csv
import math
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from rdkit import Chem
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline

from sklearn_cmim import CMIMTransformer, ECFPTransformer, cli
from sklearn_cmim.chem.properties import _ring_penalty
from sklearn_cmim.chem.standardize import canonical_smiles
from sklearn_cmim.config import DEFAULT_MODEL
from sklearn_cmim.optimization import optimize_molecules, penalized_logp, qed, tanimoto_similarity

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
JTVAE_SEEDS = SHARED_DATA / "optimization" / "jtvae_opt_test_plogp.txt"
SEEDS = ["CCOc1ccccc1", "CC(=O)Nc1ccc(O)cc1", "Cc1ccccc1C(=O)O"]
SEARCH = dict(similarity=0.4, budget=40, random_state=0)
SMALL = dict(similarity=0.4, budget=8, popsize=8, max_iter=4, random_state=0)  # where only sameness counts


@pytest.fixture(scope="module")
def cmim():
    return CMIMTransformer.from_pretrained(DEFAULT_MODEL, embedding="latent")  # the command's default


@pytest.fixture(scope="module")
def results(cmim):
    return optimize_molecules(cmim, SEEDS, "qed", **SEARCH)


@pytest.fixture(scope="module")
def small(cmim):
    return optimize_molecules(cmim, SEEDS, "qed", **SMALL)


# ---------------------------------------------------------------------------------- objectives
def test_penalized_logp_normalised_reproduces_the_reference_codes_own_check():
    # hgraph2graph's props/properties.py ends by printing this molecule's score next to 5.30.
    smiles = "ClC1=CC=C2C(C=C(C(C)=O)C(C(NC3=CC(NC(NC4=CC(C5=C(C)C=CC=C5)=CC=C4)=O)=CC=C3)=O)=C2)=C1"
    assert penalized_logp([smiles], normalized=True)[0] == pytest.approx(5.30, abs=5e-3)


@pytest.mark.shared_data
@pytest.mark.skipif(not JTVAE_SEEDS.is_file(), reason=f"{JTVAE_SEEDS} is absent")
def test_penalized_logp_reproduces_the_jtvae_seed_values():
    rows = [line.split() for line in JTVAE_SEEDS.read_text().splitlines()]
    assert len(rows) == 800
    # The file leaves the ring penalty out (JT-VAE's molopt/optimize.py scores logP - SA): seeds
    # with a ring of more than six atoms differ from ours by exactly that penalty.
    penalties = {s: _ring_penalty(Chem.MolFromSmiles(s)) for s, _ in rows}
    chosen = rows[:30] + [row for row in rows if penalties[row[0]] > 0][:5]
    ours = penalized_logp([s for s, _ in chosen])
    np.testing.assert_allclose(ours + [penalties[s] for s, _ in chosen], [float(v) for _, v in chosen],
                               atol=1e-6)
    assert [penalties[s] for s, _ in chosen[-5:]] != [0] * 5


def test_similarity_and_qed_are_the_usual_ones():
    assert tanimoto_similarity("CCO", ["CCO"])[0] == 1.0
    assert qed(["c1ccccc1"])[0] == pytest.approx(0.4426, abs=1e-4)
    with pytest.raises(ValueError, match=r"smiles\[1\] = 'C1CC'"):
        qed(["CCO", "C1CC"])


# ------------------------------------------------------------------------------ the optimiser
def test_best_molecules_are_valid_similar_and_never_worse_than_the_seed(results):
    assert list(results["seed"]) == SEEDS
    for i, seed in enumerate(SEEDS):
        best = results["smiles"][i]
        assert canonical_smiles(best) is not None
        assert results["similarity"][i] >= 0.4
        assert results["similarity"][i] == pytest.approx(tanimoto_similarity(seed, [best])[0])
        assert results["score"][i] == pytest.approx(qed([best])[0])
        assert results["improvement"][i] == pytest.approx(results["score"][i] - qed([seed])[0])
        assert results["improvement"][i] >= 0 and results["n_scored"][i] <= 40
        history = results["history"][i]
        assert len(history) == results["n_generations"][i] + 1 and history[-1] == results["score"][i]
        assert np.all(np.diff(history) >= 0)
    assert (results["improvement"] > 0).sum() >= 2  # the search does find better molecules


def test_same_random_state_same_molecules_and_numpys_global_generator_untouched(cmim, small):
    state = np.random.get_state()  # noqa: NPY002 (the legacy global generator is the one to guard)
    again = optimize_molecules(cmim, SEEDS, "qed", **SMALL)
    assert list(again["smiles"]) == list(small["smiles"])
    np.testing.assert_array_equal(again["score"], small["score"])
    assert all(len(h) > 1 for h in small["history"])  # generations ran: the draws were used
    after = np.random.get_state()  # noqa: NPY002
    assert all(np.array_equal(a, b) for a, b in zip(state, after, strict=True))


def test_a_seeds_result_does_not_depend_on_the_seeds_beside_it(cmim, small):
    alone = optimize_molecules(cmim, [SEEDS[1], SEEDS[1]], "qed", **SMALL)
    assert list(alone["smiles"]) == [small["smiles"][1]] * 2  # not its place, nor its neighbours
    np.testing.assert_array_equal(alone["score"], [small["score"][1]] * 2)
    np.testing.assert_array_equal(alone["history"][0], small["history"][1])


def test_a_salt_is_measured_as_the_model_reads_it_unless_asked_otherwise(cmim):
    salt, parent = "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]", "CC(=O)Oc1ccccc1C(=O)O"
    strict = dict(similarity=1.0, budget=3, popsize=4, max_iter=2, random_state=0)
    found = optimize_molecules(cmim, [salt], "qed", **strict)
    # The parent acid, all the model can decode, is the seed itself: no improvement.
    assert found["seed"][0] == salt and found["smiles"][0] == parent
    assert found["seed_score"][0] == pytest.approx(qed([parent])[0]) and found["improvement"][0] == 0
    given = optimize_molecules(cmim, [salt], "qed", reference="given", **strict)
    assert given["seed_score"][0] == pytest.approx(qed([salt])[0]) != found["seed_score"][0]


def test_a_strict_threshold_and_budget_are_kept(cmim):
    strict = optimize_molecules(cmim, SEEDS[:1], "qed", similarity=1.0, budget=3, popsize=4, max_iter=12,
                                random_state=1)
    # Only the seed itself is exactly as similar as itself: nothing better can count, nothing is
    # scored, and the search runs its max_iter generations (cma's own stopping rules stay out).
    assert strict["improvement"][0] == 0 and strict["smiles"][0] == SEEDS[0]
    assert strict["similarity"][0] == 1.0 and strict["n_scored"][0] == 0
    assert strict["n_generations"][0] == 12


def test_an_estimator_or_callable_objective_is_maximised(cmim, esol):
    smiles, solubility = esol
    regressor = make_pipeline(ECFPTransformer(n_bits=256), Ridge()).fit(smiles[:200], solubility[:200])
    found = optimize_molecules(cmim, SEEDS[:1], regressor, budget=8, popsize=8, random_state=0)
    assert found["score"][0] == pytest.approx(regressor.predict([found["smiles"][0]])[0])
    classifier = make_pipeline(ECFPTransformer(n_bits=256), LogisticRegression()).fit(
        smiles[:200], solubility[:200] > -2)
    found = optimize_molecules(cmim, SEEDS[:1], classifier, budget=8, popsize=8, random_state=0)
    assert found["score"][0] == pytest.approx(classifier.predict_proba([found["smiles"][0]])[0, 1])
    found = optimize_molecules(cmim, SEEDS[:1], lambda s: [len(x) for x in s], budget=8, popsize=8,
                               random_state=0)
    assert found["score"][0] == len(found["smiles"][0])
    # Labels that do not say which class is wanted must be named: sorted, "inactive" comes second.
    named = make_pipeline(ECFPTransformer(n_bits=256), LogisticRegression()).fit(
        smiles[:200], np.where(solubility[:200] > -2, "soluble", "insoluble"))
    with pytest.raises(ValueError, match=r"say which of the classifier's classes \['insoluble', 'soluble'\]"):
        optimize_molecules(cmim, SEEDS[:1], named, budget=8, popsize=8, random_state=0)
    found = optimize_molecules(cmim, SEEDS[:1], named, positive_class="soluble", budget=8, popsize=8,
                               random_state=0)
    assert found["score"][0] == pytest.approx(named.predict_proba([found["smiles"][0]])[0, 1])
    found = optimize_molecules(cmim, SEEDS[:1], named, positive_class="insoluble", budget=8, popsize=8,
                               random_state=0)
    assert found["score"][0] == pytest.approx(named.predict_proba([found["smiles"][0]])[0, 0])
    # As the command line gives it, a string names a class of numbers or booleans too.
    from sklearn_cmim.objectives import positive_column
    assert positive_column(np.array([0.0, 1.0]), "1") == 1
    assert positive_column(np.array([True, False]), "true") == 0
    assert positive_column(np.array([1, 2, 3]), "3") == 2


BAD_INPUT = [
    (dict(objective="logp"), ValueError, "unknown objective 'logp'"),
    (dict(objective=3), TypeError, "objective must be one of 'qed', 'plogp'"),
    (dict(objective=lambda s: [1.0]), ValueError, r"scores of shape \(1,\) for 2 molecules"),
    (dict(objective=lambda s: [math.nan] * len(s)), ValueError, r"gave nan for 'CCOc1ccccc1' \(seeds\[0\]\)"),
    (dict(objective=lambda s: ["high"] * len(s)), TypeError, "must return numbers"),
    # An estimator fitted on numbers, not SMILES: its error is named, in one line.
    (dict(objective=Ridge().fit([[0.0], [1.0]], [0.0, 1.0])), ValueError,
     r"^the objective failed on a list of 2 SMILES \(seeds\[0\] among them\): ValueError: [^\n]+ \(an "
     r"estimator must read SMILES itself"),
    (dict(seeds=["CCO", "C1CC"]), ValueError, r"seeds\[1\] = 'C1CC' is not a SMILES RDKit can read"),
    (dict(seeds=["CCO", "C" * 300]), ValueError, r"seeds\[1\] = 'CCCC.+ cannot be encoded: it is 302 tokens"),
    (dict(seeds="CCO"), TypeError, "seeds must be a sequence of molecules, not a single one"),
    (dict(seeds=[]), ValueError, "seeds is empty"),
    (dict(reference="raw"), ValueError, "reference must be 'standardised' or 'given'"),
    (dict(positive_class=1), ValueError, "positive_class applies to a classifier objective"),
    (dict(seeds=["CCO", 5]), TypeError, r"seeds\[1\] = 5 is neither"),
    (dict(similarity=1.5), ValueError, "similarity must be a number >= 0 and <= 1"),
    (dict(budget=0), ValueError, "budget must be a whole number >= 1"),
    (dict(budget=2.5), ValueError, "budget must be a whole number"),
    (dict(sigma0=0), ValueError, "sigma0 must be a number > 0"),
    (dict(sigma0=float("inf")), ValueError, "sigma0 must be a number > 0 and <= 10, got inf"),
    (dict(sigma0=1e308), ValueError, "sigma0 must be a number > 0 and <= 10"),  # overflowed in CMA-ES
    (dict(popsize=1), ValueError, "popsize must be a whole number >= 2"),
    (dict(popsize=10**9), ValueError, "popsize must be a whole number >= 2 and <= 10000"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD_INPUT)
def test_bad_input_gives_a_clear_error(cmim, change, error, message):
    arguments = dict(seeds=SEEDS[:2], objective="qed", budget=4, popsize=4, max_iter=2, random_state=0)
    arguments.update(change)
    with pytest.raises(error, match=message):
        optimize_molecules(cmim, arguments.pop("seeds"), arguments.pop("objective"), **arguments)


def test_candidates_the_objective_cannot_score_are_passed_over_with_a_warning(cmim):
    # Only the seeds score; every candidate gets NaN or +inf, and no finished seed is lost.
    def objective(smiles):
        return [1.0 if s in SEEDS else (math.inf if len(s) % 2 else math.nan) for s in smiles]
    with pytest.warns(UserWarning, match=r"no finite score for \d+ candidate molecule\(s\), '.+' first"):
        found = optimize_molecules(cmim, SEEDS[:2], objective, similarity=0.0, budget=6, popsize=6,
                                   random_state=0)
    assert list(found["smiles"]) == SEEDS[:2] and list(found["improvement"]) == [0.0, 0.0]
    assert all(n > 0 for n in found["n_scored"])


def test_embeddings_without_the_latent_are_refused():
    informative = CMIMTransformer.from_pretrained("cmim-broad", informative_with_latent=False)
    with pytest.raises(ValueError, match="embedding='latent'"):
        optimize_molecules(informative, SEEDS[:1], "qed")


def test_without_cma_the_error_names_the_extra(cmim, monkeypatch):
    monkeypatch.setitem(sys.modules, "cma", None)  # makes `import cma` fail
    with pytest.raises(ImportError, match=r"sklearn-cmim\[optimize\]"):
        optimize_molecules(cmim, SEEDS[:1], "qed")


# --------------------------------------------------------------------------------- the command
def run(capsys, *argv):
    try:
        status = cli.main(["optimize", *map(str, argv)])
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def test_command_writes_one_row_per_seed_as_the_function_finds(capsys, cmim, tmp_path):
    seeds = tmp_path / "seeds.smi"
    seeds.write_text("".join(f"{s} name{i}\n" for i, s in enumerate(SEEDS[:2])))
    common = ["--budget", 6, "--popsize", 6, "--random-state", 0]
    status, out, err = run(capsys, seeds, "--objective", "qed", "--output", tmp_path / "out.csv", *common)
    assert status == 0 and out == ""
    assert err.startswith("2 seeds: ") and err.endswith(f"; wrote {tmp_path / 'out.csv'}\n")
    with open(tmp_path / "out.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["seed", "smiles", "score", "improvement", "similarity"]
    expected = optimize_molecules(cmim, SEEDS[:2], "qed", budget=6, popsize=6, random_state=0)
    assert [row[0] for row in rows] == SEEDS[:2] and [row[1] for row in rows] == list(expected["smiles"])
    np.testing.assert_allclose(np.array([row[2:] for row in rows], dtype=float),
                               np.column_stack([expected[k] for k in header[2:]]))


def test_command_maximises_an_estimator_from_a_joblib_file(capsys, esol, tmp_path):
    smiles, solubility = esol
    model = make_pipeline(ECFPTransformer(n_bits=256), Ridge()).fit(smiles[:200], solubility[:200])
    joblib.dump(model, tmp_path / "solubility.joblib")
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("id,smiles\n1,CCOc1ccccc1\n")
    status, out, _ = run(capsys, seeds, "--objective", tmp_path / "solubility.joblib", "--budget", 4,
                         "--popsize", 4, "--random-state", 0)
    assert status == 0
    header, row = list(csv.reader(out.splitlines()))
    assert header[:2] == ["seed", "smiles"] and float(row[2]) == pytest.approx(model.predict([row[1]])[0])
    # A classifier with named classes: --positive-class says which probability to maximise.
    labels = np.where(solubility[:200] > -2, "soluble", "insoluble")
    joblib.dump(make_pipeline(ECFPTransformer(n_bits=256), LogisticRegression()).fit(smiles[:200], labels),
                tmp_path / "soluble.joblib")
    argv = [seeds, "--objective", tmp_path / "soluble.joblib", "--budget", 4, "--popsize", 4]
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == "" and "--positive-class" in err and err.count("\n") == 1
    status, out, _ = run(capsys, *argv, "--positive-class", "soluble")
    assert status == 0 and len(out.splitlines()) == 2


@pytest.mark.parametrize(("argv", "message"), [
    (["{seeds}", "--objective", "logp"], "neither one of qed, plogp nor a joblib file"),
    (["{seeds}", "--objective", "{tmp}/missing.joblib"], "neither one of qed, plogp nor a joblib file"),
    (["{seeds}", "--objective", "{seeds}"], "cannot load the estimator in"),
    (["{tmp}/missing.smi", "--objective", "qed"], "cannot read"),
    (["{bad}", "--objective", "qed"], "line 2 of {bad}: 'C1CC' cannot be read"),
    (["{seeds}", "--objective", "qed", "--similarity", "1.5"], "must be in [0, 1]"),
    (["{seeds}", "--objective", "qed", "--budget", "0"], "positive integer"),
    (["{seeds}", "--objective", "qed", "--random-state", "4294967296"], "from 0 to 2**32 - 1"),
    (["{seeds}"], "--objective"),
])
def test_command_user_errors_are_one_line(capsys, tmp_path, argv, message):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    paths = {"seeds": inputs / "seeds.smi", "bad": inputs / "bad.smi", "tmp": tmp_path}
    paths["seeds"].write_text("CCO\n")
    paths["bad"].write_text("CCO\nC1CC\n")
    argv = [a.format(**paths) for a in argv]
    status, out, err = run(capsys, *argv, "--output", tmp_path / "out.csv")
    assert status == 2 and out == ""
    assert err.startswith("cmim optimize: error: ") and err.count("\n") == 1
    assert message.format(**paths) in err
    assert not (tmp_path / "out.csv").exists()


def test_command_without_cma_names_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cma", None)
    (tmp_path / "seeds.smi").write_text("CCO\n")
    status, _, err = run(capsys, tmp_path / "seeds.smi", "--objective", "qed")
    assert status == 2 and "pip install 'sklearn-cmim[optimize]'" in err


def test_command_and_function_share_their_defaults():
    import inspect

    from sklearn_cmim.cli.optimize import build_parser

    defaults = inspect.signature(optimize_molecules).parameters
    parser = build_parser()
    for name in ("similarity", "budget", "sigma0", "popsize", "max_iter"):
        assert parser.get_default(name) == defaults[name].default, name
