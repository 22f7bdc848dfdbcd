"""Shared fixtures: tiny model configs and small molecule sets, all available offline."""

import os

import pytest

from sklearn_cmim import CMIMTransformer, cli
from sklearn_cmim.datasets import load_esol

# Small enough that a fit over a few dozen molecules takes well under a second. One thread: a model
# this small gains nothing from more, and a fixed count keeps the bits the same whatever the load.
TINY = dict(d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1, n_decoder_layers=1, n_latents=1,
            latent_dim=8, max_epochs=2, batch_size=8, random_state=0, n_threads=1)


def run_cmim(capsys, *argv):
    """``cmim ARGV`` in-process: (exit status, stdout, stderr), argparse's own exits included."""
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


class RunsACommand:
    """An object whose unpickling would create ``marker``: the payload of a malicious file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="session")
def esol():
    return load_esol()


@pytest.fixture(scope="session")
def smiles(esol):
    return esol[0][:24]


@pytest.fixture
def tiny():
    """A fresh unfitted tiny estimator."""
    return CMIMTransformer(**TINY)


@pytest.fixture(scope="session")
def fitted(smiles):
    """A tiny estimator fitted once for the session; tests must not modify it."""
    return CMIMTransformer(**TINY).fit(smiles)
