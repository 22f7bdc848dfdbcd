"""``cmim embed``, ``cmim sample`` and ``cmim reconstruct`` against the estimator they wrap."""

import csv
import gzip
import inspect
import io
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sklearn_cmim import CMIMTransformer, cli, progress
from sklearn_cmim.chem.standardize import canonical_smiles
from sklearn_cmim.cli.sample import build_parser as sample_parser
from sklearn_cmim.config import DEFAULT_MODEL
from sklearn_cmim.nn.sampling import DEFAULT_SIGMA
from tests.conftest import TINY
from tests.conftest import run_cmim as run

# A model that learns to give a few of these alcohols and amines back within a second of training,
# so that reconstruction accuracy is not trivially zero.
ALCOHOLS = ["C" * n + "O" for n in range(1, 9)] + ["C" * n + "N" for n in range(1, 9)]
DECODER = {**TINY, "max_epochs": 60, "learning_rate": 3e-3, "mim_warmup_steps": 0, "max_length": 16}


def reference(model, smiles, **params):
    return CMIMTransformer(pretrained=model, max_epochs=0, **params).fit(smiles)


@pytest.fixture(scope="module")
def model(fitted, tmp_path_factory):
    """The session's tiny model (TINY fitted on 24 ESOL molecules) as a model directory."""
    return fitted.save_pretrained(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def smi(smiles, tmp_path_factory):
    """The 24 molecules as a .smi file, each followed by a name."""
    path = tmp_path_factory.mktemp("inputs") / "molecules.smi"
    path.write_text("".join(f"{s} mol{i}\n" for i, s in enumerate(smiles)))
    return path


def test_embed_to_npy_is_the_estimators_transform(capsys, model, smi, smiles, tmp_path):
    status, out, _ = run(capsys, "embed", smi, "--output", tmp_path / "x.npy", "--model", model)
    assert status == 0 and out == f"wrote {tmp_path / 'x.npy'}\n"
    X = np.load(tmp_path / "x.npy")
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, reference(model, smiles[:3]).transform(smiles))
    assert os.listdir(tmp_path) == ["x.npy"]  # no temporary file left behind


def test_embed_to_csv_names_its_columns_and_keeps_the_input_smiles(capsys, model, smiles, tmp_path):
    source = tmp_path / "in.csv"
    with open(source, "w", newline="") as handle:  # the SMILES column is found by its name
        csv.writer(handle).writerows([["name", "SMILES"], *([f"m{i}", s] for i, s in enumerate(smiles))])
    status, _, _ = run(capsys, "embed", source, "--output", tmp_path / "x.csv", "--model", model,
                       "--embedding", "latent")
    assert status == 0
    with open(tmp_path / "x.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    estimator = reference(model, smiles, embedding="latent")
    assert header == ["smiles", *estimator.get_feature_names_out()]
    assert [row[0] for row in rows] == smiles
    values = np.array([row[1:] for row in rows], dtype=np.float32)
    np.testing.assert_array_equal(values, estimator.transform(smiles))  # float32 round-trips


def test_embedding_in_small_chunks_changes_nothing(capsys, model, smiles, tmp_path):
    source = tmp_path / "in.csv.gz"
    with gzip.open(source, "wt", newline="") as handle:
        csv.writer(handle).writerows([["id", "structure"], *([i, s] for i, s in enumerate(smiles))])
    # In fp32: bf16 results depend on which molecules share a batch (by 1e-3 or so), in or out of the CLI.
    common = ["--model", model, "--column", "structure", "--precision", "fp32"]
    assert run(capsys, "embed", source, "--output", tmp_path / "one.npy", *common)[0] == 0
    assert run(capsys, "embed", source, "--output", tmp_path / "many.npy", "--chunk-size", 5, *common)[0] == 0
    one = np.load(tmp_path / "one.npy")
    np.testing.assert_array_equal(one, reference(model, smiles, precision="fp32").transform(smiles))
    np.testing.assert_allclose(np.load(tmp_path / "many.npy"), one, rtol=1e-6, atol=1e-6)


def test_errors_nan_gives_nan_rows_where_the_bad_molecules_are(capsys, model, smiles, tmp_path):
    lines = [smiles[0], "C1CC", smiles[1], smiles[2], "", smiles[3]]
    source = tmp_path / "in.smi"
    source.write_text("\n".join(lines) + "\n")
    status, _, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", model,
                         "--errors", "nan")
    assert status == 0 and err == "cmim embed: warning: 2 of 6 molecules cannot be read; their rows are NaN\n"
    X = np.load(tmp_path / "x.npy")
    bad = np.isnan(X).all(axis=1)
    assert bad.tolist() == [False, True, False, False, True, False]
    good = [s for s, b in zip(lines, bad, strict=True) if not b]
    np.testing.assert_array_equal(X[~bad], reference(model, good).transform(good))


@pytest.mark.parametrize(("bad", "shown", "why"), [
    ("C1CC", "'C1CC'", "cannot be read: RDKit cannot parse"),
    ("C" * 200, "'" + "C" * 76 + "...", "is too long: it is 202 tokens long"),  # a long field, shortened
])
def test_errors_raise_names_the_line_and_writes_nothing(capsys, model, smiles, tmp_path, bad, shown, why,
                                                        monkeypatch):
    embedded = []  # every molecule is checked before the first chunk is embedded
    transform = CMIMTransformer._transform_encoded

    def spy(self, encoded):
        embedded.append(len(encoded.sequences))
        return transform(self, encoded)

    monkeypatch.setattr(CMIMTransformer, "_transform_encoded", spy)
    source = tmp_path / "in.smi"
    source.write_text("\n".join([*smiles[:3], bad, *smiles[3:6]]) + "\n")
    for output in ("x.npy", "x.csv"):
        status, out, err = run(capsys, "embed", source, "--output", tmp_path / output, "--model", model,
                               "--chunk-size", 2)  # the bad molecule is in the second chunk
        assert status == 2 and out == ""
        assert err.startswith(f"cmim embed: error: line 4 of {source}: {shown} {why}")
        assert err.endswith(" (with --errors nan it gets a NaN row)\n") and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["in.smi"] and embedded == []
    status, _, _ = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", model,
                       "--chunk-size", 2, "--errors", "nan")
    assert status == 0 and embedded == [2, 2, 2, 1]  # the spy sees what it should


def test_reconstruct_stops_at_a_bad_molecule_before_it_writes_a_line(capsys, model, smiles, tmp_path):
    source = tmp_path / "in.smi"
    source.write_text("\n".join([*smiles[:3], "C1CC"]) + "\n")
    status, out, err = run(capsys, "reconstruct", source, "--model", model, "--chunk-size", 2)
    assert status == 2 and out == ""  # stdout held the header and the first chunk's lines
    assert err.startswith(f"cmim reconstruct: error: line 4 of {source}: 'C1CC' cannot be read")


def test_too_long_molecules_are_not_called_unreadable(capsys, model, smiles, tmp_path):
    source = tmp_path / "in.smi"
    source.write_text("\n".join([smiles[0], "C" * 200, "CC(C)" * 60, "C1CC", smiles[1]]) + "\n")
    status, _, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", model,
                         "--errors", "nan")
    assert status == 0
    assert err == ("cmim embed: warning: 2 of 5 molecules are longer than the model's max_length (128 "
                   "tokens) and 1 cannot be read; their rows are NaN\n")
    assert np.isnan(np.load(tmp_path / "x.npy")).all(axis=1).tolist() == [False, True, True, True, False]
    status, out, err = run(capsys, "reconstruct", source, "--model", model, "--errors", "nan")
    assert status == 0 and len(out.splitlines()) == 6
    assert err.splitlines()[0] == ("cmim reconstruct: warning: 2 of 5 molecules are longer than the model's "
                                   "max_length (128 tokens) and 1 cannot be read; they are left out")
    assert err.splitlines()[1].startswith("exact-match accuracy ") and len(err.splitlines()) == 2


def test_one_bad_molecule_is_counted_in_the_singular(capsys, model, smiles, tmp_path):
    source = tmp_path / "in.smi"
    source.write_text("\n".join([smiles[0], "C" * 200, smiles[1]]) + "\n")
    status, _, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", model,
                         "--errors", "nan")
    assert status == 0
    assert err == ("cmim embed: warning: 1 of 3 molecules is longer than the model's max_length (128 "
                   "tokens); its row is NaN\n")
    status, _, err = run(capsys, "reconstruct", source, "--model", model, "--errors", "nan")
    assert status == 0
    assert err.splitlines()[0] == ("cmim reconstruct: warning: 1 of 3 molecules is longer than the model's "
                                   "max_length (128 tokens); it is left out")


def test_a_model_whose_weights_give_nan_is_named_not_its_molecules_called_too_long(capsys, fitted, tmp_path):
    damaged = fitted.save_pretrained(tmp_path / "diverged")  # as a run that diverged leaves it
    weights = torch.load(damaged / "weights.pt", weights_only=True)
    torch.save({k: v * float("nan") if v.is_floating_point() else v for k, v in weights.items()},
               damaged / "weights.pt")
    source = tmp_path / "in.smi"
    # The NaN rows were read as bad molecules: "'CCO' is too long: None". Under --errors raise an
    # unreadable molecule is found first, before any molecule is embedded: the file holds none.
    for errors, text, line in (("raise", "CCO\nc1ccccc1\n", 1), ("nan", "C1CC\nCCO\nc1ccccc1\n", 2)):
        source.write_text(text)
        status, out, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", damaged,
                               "--errors", errors)
        assert status == 2 and out == "" and err.count("\n") == 1, err
        assert err == (f"cmim embed: error: the model gave non-finite values for line {line} of {source} "
                       "('CCO', a molecule it reads); its weights may be damaged (a training run that "
                       "diverged?)\n")
        assert not (tmp_path / "x.npy").exists()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_embed_draws_progress_on_a_terminal_once_a_run_lasts_a_few_seconds(capsys, model, smi, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert run(capsys, "embed", smi, "--output", tmp_path / "quick.npy", "--model", model)[0] == 0
    assert sys.stderr.getvalue() == ""  # done in well under SHOW_AFTER seconds: no bar
    clock = itertools.count(step=1.2)  # a slow machine: every chunk takes 1.2 s
    monkeypatch.setattr(progress, "perf_counter", lambda: next(clock))
    assert run(capsys, "embed", smi, "--output", tmp_path / "slow.npy", "--model", model,
               "--chunk-size", 8)[0] == 0
    # 24 molecules in 3 chunks; 2 s have passed at the 2nd. Every molecule is checked first.
    drawn = sys.stderr.getvalue().split("\r")[1:]
    assert [line.split("] ")[1] for line in drawn] == ["16/24 2s", "24/24 4s\n"] * 2
    assert [line.split(" [")[0] for line in drawn] == ["checking molecules"] * 2 + ["embedding molecules"] * 2


def test_an_error_after_the_progress_bar_is_drawn_starts_a_line_of_its_own(capsys, model, smiles, tmp_path,
                                                                          monkeypatch):
    source = tmp_path / "in.smi"
    source.write_text("\n".join([*smiles[:20], "C1CC", *smiles[20:]]) + "\n")  # in the 3rd chunk of 8
    monkeypatch.setattr(sys, "stderr", Terminal())
    clock = itertools.count(step=1.2)
    monkeypatch.setattr(progress, "perf_counter", lambda: next(clock))
    assert run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", model,
               "--chunk-size", 8)[0] == 2
    bar, error = sys.stderr.getvalue().split("\n")[:2]  # the error was written after "16/25 2s"
    assert bar.startswith("\rchecking molecules [#") and bar.endswith("] 16/25 2s")
    assert error.startswith(f"cmim embed: error: line 21 of {source}: 'C1CC' cannot be read")
    progress.end_bar()  # a bar ended once is not ended again
    assert sys.stderr.getvalue().count("\n") == 2


@pytest.mark.parametrize("prior", ["fitted", "standard"])
def test_sample_from_the_prior_is_reproducible(capsys, model, smiles, prior):
    options = ("--prior", prior) if prior == "standard" else ()  # "fitted" is the default
    status, out, err = run(capsys, "sample", "--n", 6, "--model", model, "--random-state", 3, *options)
    assert status == 0
    expected = reference(model, smiles).sample(6, random_state=3, prior=prior)
    assert out.splitlines() == [s or "" for s in expected]  # an unfinished decoding: an empty line
    assert run(capsys, "sample", "--n", 6, "--model", model, "--random-state", 3, *options)[1] == out
    last = err.splitlines()[-1]
    assert last.startswith("6 molecules: ") and f"from the {prior} prior; sampling --around" in last


def test_sample_and_the_estimator_share_one_default_sigma():
    default = inspect.signature(CMIMTransformer.sample).parameters["sigma"].default
    assert sample_parser().get_default("sigma") == default == DEFAULT_SIGMA
    assert f"sigma : float, default={DEFAULT_SIGMA}\n" in CMIMTransformer.sample.__doc__


def test_sample_around_a_molecule_by_default_is_mostly_valid_and_says_so(capsys):
    aspirin = "CC(=O)Oc1ccccc1C(=O)O"
    status, out, err = run(capsys, "sample", "--n", 30, "--around", aspirin, "--random-state", 0)
    assert status == 0
    samples = out.splitlines()
    model = CMIMTransformer.from_pretrained(DEFAULT_MODEL)  # the command's default
    assert samples == list(model.sample(30, random_state=0, around=[aspirin]))
    valid = [c for c in map(canonical_smiles, samples) if c is not None]
    assert len(valid) >= 24  # 80%
    assert err == (f"30 molecules: {len(valid)} valid ({len(valid) / 30:.1%}), {len(set(valid))} unique "
                   f"among the valid ({len(set(valid)) / len(valid):.1%})\n")


def test_sample_beyond_memory_is_one_line_and_sigma_0_decodes_the_mean(capsys, model):
    status, out, err = run(capsys, "sample", "--n", 10**12, "--model", model, "--around", "CCO")
    assert status == 2 and out == "" and "too many molecules to hold in memory" in err
    assert err.count("\n") == 1
    # The bundled model decodes ethanol's latent mean back to ethanol.
    status, out, _ = run(capsys, "sample", "--n", 2, "--around", "OCC", "--sigma", 0)
    assert status == 0 and out.splitlines() == ["CCO", "CCO"]


def test_sample_around_molecules_from_arguments_or_a_file(capsys, model, tmp_path):
    seeds = tmp_path / "seeds.smi"
    seeds.write_text("CCO\nc1ccccc1\n")
    common = ["--n", 3, "--model", model, "--sigma", 0.2, "--random-state", 0]
    assert run(capsys, "sample", "--around", "CCO", "c1ccccc1", "--output", tmp_path / "a.smi",
               *common)[0] == 0
    assert run(capsys, "sample", "--around-file", seeds, "--output", tmp_path / "b.smi",
               *common)[0] == 0
    produced = (tmp_path / "a.smi").read_text()
    assert len(produced.splitlines()) == 6  # --n per molecule
    assert (tmp_path / "b.smi").read_text() == produced
    # A CSV's SMILES column need not be the first, nor be named smiles.
    table = tmp_path / "seeds.csv"
    table.write_text("id,structure\nm1,CCO\nm2,c1ccccc1\n")
    assert run(capsys, "sample", "--around-file", table, "--column", "structure", "--output",
               tmp_path / "c.smi", *common)[0] == 0
    assert (tmp_path / "c.smi").read_text() == produced


def test_reconstruct_accuracy_agrees_with_score(capsys, tmp_path):
    model = CMIMTransformer(**DECODER).fit(ALCOHOLS).save_pretrained(tmp_path / "model")
    source = tmp_path / "alcohols.smi"
    source.write_text("\n".join(ALCOHOLS) + "\n")
    status, out, err = run(capsys, "reconstruct", source, "--model", model, "--chunk-size", 5)
    assert status == 0
    header, *rows = [line.split("\t") for line in out.splitlines()]
    assert header == ["input", "decoded", "match"] and [r[0] for r in rows] == ALCOHOLS
    matches = sum(r[2] == "True" for r in rows)
    score = reference(model, ALCOHOLS).score(ALCOHOLS)
    assert matches == round(score * len(ALCOHOLS))
    accuracy = float(err.split("exact-match accuracy ")[1].split()[0])
    assert accuracy == pytest.approx(score, abs=1e-6)


def test_reconstruct_keeps_a_field_holding_a_tab_in_its_column(capsys, model, smiles, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(f'smiles,id\n{smiles[0]},1\n"CC\tO",2\n{smiles[1]},3\n')
    status, out, err = run(capsys, "reconstruct", source, "--model", model, "--errors", "nan")
    assert status == 0, err
    rows = list(csv.reader(io.StringIO(out), delimiter="\t"))  # a tab in a field shifted the columns
    assert [len(row) for row in rows] == [3, 3, 3, 3]
    assert [row[0] for row in rows] == ["input", smiles[0], "CC\tO", smiles[1]] and rows[2][1:] == ["", ""]
    lines = out.splitlines()  # ordinary rows are written as before, without quotes
    assert lines[0] == "input\tdecoded\tmatch" and lines[2] == '"CC\tO"\t\t'
    assert [lines[1], lines[3]] == ["\t".join(rows[1]), "\t".join(rows[3])]


def test_a_decoding_the_model_does_not_finish_is_written_empty_and_is_no_match(capsys, model, tmp_path,
                                                                             monkeypatch):
    from sklearn_cmim.nn.model import CMIMModel

    carbon = CMIMTransformer.from_pretrained(model).vocabulary_.index["C"]
    monkeypatch.setattr(CMIMModel, "generate",  # the positions run out before any <eos>
                        lambda self, z, bos_id, eos_id, max_length=None: torch.full((len(z), 9), carbon))
    status, out, err = run(capsys, "sample", "--n", 2, "--around", "CCO", "--model", model)
    assert status == 0 and out == "\n\n" and err.startswith("2 molecules: 0 valid")
    source = tmp_path / "two.smi"
    source.write_text("CCO\nnot-a-molecule\n")
    status, out, err = run(capsys, "reconstruct", source, "--model", model, "--errors", "nan")
    assert status == 0
    # Read but not finished: no match, counted; unreadable: left out of the accuracy.
    assert out.splitlines()[1:] == ["CCO\t\tFalse", "not-a-molecule\t\t"]
    assert "exact-match accuracy 0.0" in err


USER_ERRORS = [
    (["embed", "{tmp}/missing.smi", "--output", "{tmp}/x.npy", "--model", "{model}"], "cannot read"),
    (["embed", "{tmp}/in.sdf", "--output", "{tmp}/x.npy", "--model", "{model}"], "unknown format"),
    (["embed", "{smi}", "--output", "{tmp}/x.parquet", "--model", "{model}"], ".npy or .csv"),
    (["embed", "{smi}", "--output", "{tmp}/no/x.npy", "--model", "{model}"], "does not exist"),
    (["embed", "{smi}", "--output", "{tmp}/x.npy", "--model", "no-such-model"], "neither a bundled model"),
    (["embed", "{smi}", "--output", "{tmp}/x.npy", "--batch-size", "0"], "positive integer"),
    # It failed after the model loaded, in islice's words.
    (["embed", "{smi}", "--output", "{tmp}/x.npy", "--chunk-size", "100000000000000000000", "--model",
      "no-such-model"], "--chunk-size: must be at most 9223372036854775807, got '100000000000000000000'"),
    (["embed", "{smi}", "--output", "{tmp}/x.npy", "--errors", "skip"], "invalid choice"),
    (["embed", "{smi}", "--output", "{tmp}/x.npy", "--device", "gpu0"], "not a torch device"),
    (["embed", "{smi}"], "--output"),
    (["sample", "--n", "0"], "positive integer"),
    (["sample", "--n", "2", "--around", "CCO", "--sigma", "inf"], "a finite number, zero or positive"),
    (["sample", "--n", "2", "--around", "CCO", "--sigma", "nan"], "a finite number, zero or positive"),
    (["sample", "--n", "2", "--around", "CCO", "--sigma", "-0.1"], "a finite number, zero or positive"),
    (["sample", "--n", "2", "--around", "C", "--around-file", "{smi}"], "not allowed"),
    (["sample", "--n", "2", "--around", "CCO", "C1CC", "--model", "{model}"], "--around molecule 2: 'C1CC'"),
    (["reconstruct", "{tmp}/missing.csv", "--model", "{model}"], "cannot read"),
    (["reconstruct", "{smi}", "--model", "{tmp}"], "neither a bundled model"),
    (["sample", "--n", "2", "--sigma", "0.1"], "--sigma is the noise around the given molecules"),
    (["sample", "--n", "2", "--around", "CCO", "--prior", "standard"], "drop one"),
    (["sample", "--n", "2", "--around", "CCO", "--column", "smiles"], "it needs one"),
    # --column on a file that has no columns was ignored.
    (["embed", "{smi}", "--output", "{tmp}/x.npy", "--column", "smiles", "--model", "{model}"],
     "is not a .csv file, so it has no column 'smiles'"),
    (["reconstruct", "{smi}", "--column", "smiles", "--model", "{model}"], "is not a .csv file"),
    (["pretrain", "{smi}", "--output", "{tmp}/run", "--column", "smiles"], "no input file is a .csv"),
    (["demo", "--folds", "1"], "an integer of 2 or more"),
    (["demo", "--molecules", "0"], "positive integer"),
    (["demo", "--molecules", "3"], "--molecules 3 is fewer than --folds 5"),
    (["pretrain", "--weights", "1", "{smi}", "{smi}", "--output", "{tmp}/run"],
     "give --weights after the input files"),
    (["pretrain", "{smi}", "--output", "{tmp}/run", "--prepared", "{tmp}/no/p.npz"], "no does not exist"),
    (["pretrain", "{smi}", "--output", "{tmp}/run", "--prepared", "{tmp}"], "it is a directory"),
    # A finished model is not replaced unasked (the model fixture's directory holds one).
    (["pretrain", "{smi}", "--output", "{model}"], "already holds a model"),
]


@pytest.mark.parametrize(("argv", "message"), USER_ERRORS)
def test_user_errors_are_one_line_and_status_2(capsys, model, smi, tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path, smi=smi, model=model) for a in argv]
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith(f"cmim {argv[0]}: error: ") and err.count("\n") == 1
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_sampling_the_prior_of_a_model_that_has_none_says_what_to_do(capsys, fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    del config["latent_prior"]
    (path / "config.json").write_text(json.dumps(config))
    status, out, err = run(capsys, "sample", "--n", 2, "--model", path)
    assert status == 2 and out == "" and "carries no latent prior" in err and "--prior standard" in err
    status, out, _ = run(capsys, "sample", "--n", 2, "--model", path, "--prior", "standard",
                         "--random-state", 0)
    assert status == 0 and len(out.splitlines()) == 2


@pytest.mark.parametrize("command", ["embed", "sample", "reconstruct"])
def test_help_describes_the_command_with_an_example(capsys, command):
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    assert out.startswith(f"usage: cmim {command} ") and f"\n    cmim {command} " in out
    assert command in run(capsys, "--help")[1]


def test_the_command_line_runs_as_a_program(model, smi, smiles, tmp_path):
    program = [sys.executable, "-m", "sklearn_cmim"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*program, "embed", smi, "--output", tmp_path / "x.npy", "--model", model,
                           "--embedding", "latent"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    # One thread there, torch's default here: sums split differently, so the last bits may differ.
    expected = reference(model, smiles, embedding="latent").transform(smiles)
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), expected, rtol=0, atol=1e-6)
    done = subprocess.run([*program, "reconstruct", tmp_path / "missing.smi", "--model", model],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("cmim reconstruct: error: ") and done.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def no_halogens(tmp_path_factory):
    """A tiny model whose vocabulary has neither Br nor Cl."""
    model = CMIMTransformer(**TINY).fit(["CCO", "CCCN", "OCCO", "C1CCCC1"])
    return model.save_pretrained(tmp_path_factory.mktemp("no-halogens") / "model")


UNKNOWN_BR_CL = ("warning: 3 tokens are not in the model's vocabulary and were read as <unk>: "
                 "'Br' x2, 'Cl' x1")


def test_embed_reports_unknown_tokens_of_all_chunks_in_one_plain_line(capsys, no_halogens, tmp_path):
    source = tmp_path / "in.smi"
    source.write_text("CCBr\nCCO\nCBr\nCCCl\n")
    status, _, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", no_halogens,
                         "--chunk-size", 1)  # each chunk's transform warns about its own tokens
    assert status == 0
    assert err == f"cmim embed: {UNKNOWN_BR_CL}\n"


def test_a_failed_run_reports_its_error_alone(capsys, no_halogens, tmp_path):
    source = tmp_path / "in.smi"
    source.write_text("CCBr\nC1CC\n")
    status, _, err = run(capsys, "embed", source, "--output", tmp_path / "x.npy", "--model", no_halogens)
    assert status == 2 and err.count("\n") == 1  # no line for the Br the model does not know
    assert err.startswith(f"cmim embed: error: line 2 of {source}: 'C1CC' cannot be read")


def test_sample_reports_the_unknown_tokens_of_its_seeds_once(capsys, no_halogens):
    # The seeds are read twice (checked, then sampled around); their tokens count once.
    status, _, err = run(capsys, "sample", "--n", 2, "--around", "CCBr", "CBr", "CCCl",
                         "--model", no_halogens, "--random-state", 0)
    assert status == 0
    assert err.splitlines()[0].startswith("6 molecules: ")
    assert err.splitlines()[1:] == [f"cmim sample: {UNKNOWN_BR_CL}"]


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without mps")
def test_other_warnings_are_one_plain_line_too(capsys, model, smi, tmp_path):
    status, _, err = run(capsys, "embed", smi, "--output", tmp_path / "x.npy", "--model", model,
                         "--device", "mps")
    assert status == 0
    assert err == "cmim embed: warning: device 'mps' is not available here; using the CPU\n"


# Runs `cmim ARGV` in a fresh interpreter, then names the heavy libraries it imported on stderr.
HELP_PROBE = """
import sys
from pathlib import Path
from sklearn_cmim.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit_:
    status = exit_.code
print("imported:", *[m for m in ("torch", "rdkit", "sklearn") if m in sys.modules], file=sys.stderr)
raise SystemExit(status)
"""


@pytest.mark.parametrize("command", [None, *cli.COMMANDS])
def test_help_answers_without_loading_torch_rdkit_or_sklearn(command):
    # Asserted on what was imported, not on wall time, which a busy machine stretches.
    argv = ["--help"] if command is None else [command, "--help"]
    done = subprocess.run([sys.executable, "-c", HELP_PROBE, *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: cmim {command or ''}".rstrip())
    assert done.stderr.splitlines()[-1] == "imported:"


@pytest.mark.parametrize("command", ["sample", "reconstruct"])
def test_output_dash_is_stdout_not_a_file_named_dash(capsys, model, smi, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    argv = ["--n", 2, "--random-state", 0] if command == "sample" else [smi]
    status, out, _ = run(capsys, command, *argv, "--model", model, "--output", "-")
    assert status == 0 and out and not Path("-").exists()
    assert out == run(capsys, command, *argv, "--model", model)[1]
