"""``cmim demo`` end to end on a tiny model: every feature set gets a finite RMSE per fold."""

import re

import numpy as np
from sklearn.base import BaseEstimator

from sklearn_cmim import CMIMTransformer, Standardizer, cli
from sklearn_cmim.cli import demo
from tests.conftest import TINY


def test_demo_cross_validates_cmim_beside_ecfp(tmp_path, esol, capsys):
    CMIMTransformer(**TINY).fit(esol[0][:40]).save_pretrained(tmp_path / "tiny")
    assert cli.main(["demo", "--model", str(tmp_path / "tiny"), "--molecules", "60", "--folds", "2"]) == 0
    out = capsys.readouterr()
    rows = re.findall(r"^(ECFP4.*|cMIM (?:latent|informative).*?)\s+(\d+\.\d+) ± (\d+\.\d+)$",
                      out.out, flags=re.MULTILINE)
    assert [r[0].split()[0] + " " + r[0].split()[1] for r in rows] == [
        "ECFP4 (2048", "cMIM latent", "cMIM informative"]
    assert all(0 < float(r[1]) < 10 for r in rows)
    assert "cross-validation" in out.err  # the progress bar
    # Molecules 40-59 hold three Br, which the tiny model never saw: one line for the whole run,
    # not one per fit and transform of every fold.
    assert out.err.count("warning") == 1
    assert out.err.endswith("cmim demo: warning: 3 tokens are not in the model's vocabulary and were "
                            "read as <unk>: 'Br' x3\n")


def test_demo_with_an_unknown_model_is_a_one_line_error(capsys):
    assert cli.main(["demo", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-model" in err[0]


def test_demo_folds_keep_the_records_of_one_molecule_on_one_side(monkeypatch, capsys):
    # ESOL lists some molecules twice, under the same or another SMILES: a copy of a test
    # molecule in the training part flattered every feature set.
    smiles = ["CCO", "OCC", "c1ccccc1O", "Oc1ccccc1", "CCN", "CCCl", "CC(C)O", "CCCC", "CCO", "NCC"]
    folds = []

    class Spy(BaseEstimator):
        def fit(self, X, y):
            folds.append([set(X)])
            return self

        def predict(self, X):
            folds[-1].append(set(X))
            return np.zeros(len(X))

    monkeypatch.setattr(demo, "load_esol", lambda: (smiles, np.arange(len(smiles), dtype=float)))
    monkeypatch.setattr(demo, "candidates", lambda model: {"spy": Spy()})
    assert cli.main(["demo", "--folds", "3"]) == 0
    standardise = Standardizer()
    assert len(folds) == 3 and sum(len(test) for _, test in folds) == len(set(smiles))
    for train, test in folds:
        assert not {standardise(s) for s in train} & {standardise(s) for s in test}
    assert "3-fold CV by molecule" in capsys.readouterr().out
