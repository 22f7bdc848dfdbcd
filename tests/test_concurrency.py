"""Parallel use: GridSearchCV over joblib's worker processes, the torch threads those workers get,
and one fitted estimator shared by threads."""

import os
import threading

import numpy as np
import pytest
import torch
from joblib import Parallel, cpu_count, delayed
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sklearn_cmim import CMIMTransformer
from tests.conftest import TINY

pytestmark = pytest.mark.filterwarnings("ignore:.*read as <unk>:UserWarning")

N_JOBS = 2


@pytest.fixture
def loky_defaults(monkeypatch):
    """The parent without thread settings, so that joblib's loky backend applies its own rule.

    Every test that starts workers uses it: loky reuses its worker processes only while the
    environment it would give them is unchanged, so these tests share one set of workers.
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)


def threads_here():
    return os.getpid(), torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def test_loky_workers_run_torch_on_their_share_of_the_cores(loky_defaults):
    # loky starts each worker with OMP_NUM_THREADS = cpu_count() // n_jobs, and torch's intra-op
    # pool (OpenMP) takes its size from it when the worker imports torch: the workers together
    # use the cores once, with no help from CMIMTransformer.
    share = max(cpu_count() // N_JOBS, 1)
    seen = Parallel(n_jobs=N_JOBS)(delayed(threads_here)() for _ in range(4))
    assert os.getpid() not in {pid for pid, _, _ in seen}
    assert {(threads, variable) for _, threads, variable in seen} == {(share, str(share))}


def grid_search(X, y, n_jobs: int) -> GridSearchCV:
    pipe = Pipeline([("cmim", CMIMTransformer(**TINY)), ("ridge", Ridge())])
    search = GridSearchCV(pipe, {"cmim__contrastive_weight": [0.0, 1.0]}, cv=2, n_jobs=n_jobs)
    return search.fit(X, y)


@pytest.mark.slow
def test_grid_search_over_two_processes_scores_exactly_as_in_one(esol, loky_defaults):
    X, y = esol[0][:48], esol[1][:48]
    # The last bits depend on the thread count (see the Notes of CMIMTransformer); TINY fixes it.
    parallel = grid_search(X, y, n_jobs=N_JOBS)
    sequential = grid_search(X, y, n_jobs=1)
    for key in ("split0_test_score", "split1_test_score", "mean_test_score", "rank_test_score"):
        np.testing.assert_array_equal(parallel.cv_results_[key], sequential.cv_results_[key])


def test_two_threads_sharing_a_fitted_estimator_get_the_sequential_results(fitted, esol):
    molecules = [esol[0][:200], esol[0][200:400]]
    latents = [np.random.default_rng(k).standard_normal((6, 8)).astype(np.float32) for k in range(2)]
    expected = [(fitted.transform(X), fitted.inverse_transform(Z))
                for X, Z in zip(molecules, latents, strict=True)]
    start = threading.Barrier(2)
    results, failures = [None, None], []

    def work(k):
        try:
            start.wait(timeout=30)  # both threads inside the model at once
            results[k] = [(fitted.transform(molecules[k]), fitted.inverse_transform(latents[k]))
                          for _ in range(3)]
        except BaseException as error:  # reported by the main thread, which alone can fail the test
            failures.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads) and not failures, failures
    for (X, smiles), result in zip(expected, results, strict=True):
        for X_thread, smiles_thread in result:
            np.testing.assert_array_equal(X_thread, X)
            assert list(smiles_thread) == list(smiles)
