"""What ``random_state`` fixes on the CPU: every bit of the model, in any process, through pickle
and joblib, and in a GridSearchCV refit whatever its ``n_jobs``; and nothing else decides it."""

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_cmim import CMIMTransformer
from tests.conftest import TINY

pytestmark = pytest.mark.filterwarnings("ignore:.*read as <unk>:UserWarning")

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")

# Fits the tiny model for each precision and leaves its embeddings, a pickle and a joblib file.
CHILD = """
import pickle, sys
import joblib, numpy as np
from sklearn_cmim import CMIMTransformer
from sklearn_cmim.datasets import load_esol
from tests.conftest import TINY

smiles = load_esol()[0]
for precision in ("fp32", "bf16"):
    est = CMIMTransformer(**TINY, precision=precision).fit(smiles[:24])
    np.save(f"{sys.argv[1]}/{precision}.npy", est.transform(smiles[:100]))
    with open(f"{sys.argv[1]}/{precision}.pkl", "wb") as handle:
        pickle.dump(est, handle)
    joblib.dump(est, f"{sys.argv[1]}/{precision}.joblib")
"""


@pytest.mark.slow
def test_same_seed_gives_the_same_bits_in_another_process_and_through_pickle_and_joblib(esol, tmp_path):
    # Another hash seed too: nothing may depend on the order of a set or on object addresses.
    # The same thread count: the last bits depend on it (see the Notes of CMIMTransformer).
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    smiles = esol[0][:100]
    for precision in PRECISIONS:
        here = CMIMTransformer(**TINY, precision=precision).fit(esol[0][:24])
        expected = here.transform(smiles)
        np.testing.assert_array_equal(np.load(tmp_path / f"{precision}.npy"), expected)
        with open(tmp_path / f"{precision}.pkl", "rb") as handle:
            unpickled = pickle.load(handle)
        for restored in (unpickled, joblib.load(tmp_path / f"{precision}.joblib")):
            np.testing.assert_array_equal(restored.transform(smiles), expected)
            assert list(restored.sample(4, random_state=0)) == list(here.sample(4, random_state=0))


def test_fit_neither_reads_nor_moves_the_global_random_state(smiles):
    # NumPy's legacy global generator is the one scikit-learn's random_state=None draws from.
    np.random.seed(1)  # noqa: NPY002
    torch.manual_seed(1)
    expected = CMIMTransformer(**TINY).fit(smiles).transform(smiles)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(2)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002
    est = CMIMTransformer(**TINY).fit(smiles)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])  # noqa: NPY002
    np.testing.assert_array_equal(est.transform(smiles), expected)
    other = CMIMTransformer(**{**TINY, "random_state": 1}).fit(smiles).transform(smiles)
    assert not np.allclose(other, expected)


@pytest.fixture
def loky_defaults(monkeypatch):
    """As in test_concurrency.py: the same worker environment, so the same worker processes."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
def test_grid_search_refit_is_the_same_model_whatever_n_jobs(esol, loky_defaults):
    X, y, new = esol[0][:48], esol[1][:48], esol[0][100:140]
    pipe = Pipeline([("cmim", CMIMTransformer(**TINY)), ("ridge", Ridge())])
    grid = {"cmim__contrastive_weight": [0.0, 1.0]}
    searches = [GridSearchCV(pipe, grid, cv=2, n_jobs=n_jobs).fit(X, y) for n_jobs in (1, 2)]
    assert searches[0].best_params_ == searches[1].best_params_
    weight = searches[0].best_params_["cmim__contrastive_weight"]
    direct = CMIMTransformer(**TINY, contrastive_weight=weight).fit(X).transform(new)
    for search in searches:  # the refit is a fresh fit on all of X, done in this process
        np.testing.assert_array_equal(search.best_estimator_["cmim"].transform(new), direct)
    np.testing.assert_array_equal(searches[0].predict(new), searches[1].predict(new))


@pytest.mark.parametrize("source", ["bundled", "fitted"])
def test_transform_works_row_by_row_at_the_default_precision(source):
    # A prediction for one molecule must not change with the molecules scored beside it.
    from sklearn_cmim.datasets import load_esol

    smiles = load_esol()[0][:40]
    if source == "bundled":
        est = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(smiles[:1])
    else:
        est = CMIMTransformer(**TINY).fit(smiles)  # trained in bf16 where the CPU has it
    together = est.transform(smiles)
    for i in (0, 7, 39):  # short and long molecules: their batches are padded differently
        np.testing.assert_allclose(est.transform([smiles[i]])[0], together[i], rtol=0, atol=1e-5)
    latent = est.set_params(embedding="latent")
    np.testing.assert_allclose(latent.transform(smiles[5:6])[0], latent.transform(smiles)[5],
                               rtol=0, atol=1e-5)


def test_bf16_inference_is_opt_in():
    from sklearn_cmim.datasets import load_esol

    smiles = load_esol()[0][:40]
    auto = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(smiles[:1])
    fp32 = CMIMTransformer(pretrained="cmim-broad", max_epochs=0, precision="fp32").fit(smiles[:1])
    np.testing.assert_array_equal(auto.transform(smiles), fp32.transform(smiles))
    if auto.precision_ == "bf16":  # a CPU with native bf16: asking for it changes the rounding
        bf16 = CMIMTransformer(pretrained="cmim-broad", max_epochs=0, precision="bf16").fit(smiles[:1])
        assert not np.array_equal(bf16.transform(smiles), fp32.transform(smiles))


@pytest.mark.parametrize("native", [False, True])
def test_bf16_by_name_warns_on_a_cpu_that_would_emulate_it(monkeypatch, native):
    from sklearn_cmim.datasets import load_esol
    from sklearn_cmim.nn import device

    monkeypatch.setattr(device, "_cpu_has_bf16", lambda: native)
    smiles = load_esol()[0][:8]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CMIMTransformer(**{**TINY, "precision": "auto", "max_epochs": 1}).fit(smiles).transform(smiles)
        assert not [w for w in caught if "emulates" in str(w.message)]  # auto never asks for it
        CMIMTransformer(**{**TINY, "precision": "bf16", "max_epochs": 1}).fit(smiles).transform(smiles)
    emulated = [w for w in caught if "emulates" in str(w.message)]
    assert bool(emulated) != native
    assert all(w.filename == __file__ for w in emulated)  # pointed at the user's own line
