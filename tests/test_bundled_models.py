"""The models shipped inside the package load offline and do what their model cards say."""

import gzip
import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

from sklearn_cmim import CMIMTransformer, list_pretrained

MOSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "moses"


def test_cmim_moses_is_bundled_and_embeds_all_of_esol_offline(esol):
    assert "cmim-moses" in list_pretrained()
    cmim = CMIMTransformer(pretrained="cmim-moses", max_epochs=0).fit(esol[0][:1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = cmim.transform(esol[0])
    # ESOL has nitro groups, phosphorus and iodine, which MOSES lacks: one warning, no failure.
    assert sum("<unk>" in str(w.message) for w in caught) == 1
    assert X.shape == (len(esol[0]), 8 * 32 + 256) and np.isfinite(X).all()


@pytest.mark.shared_data
@pytest.mark.skipif(not MOSES.is_dir(), reason="needs ../shared/data/moses (present in CI)")
def test_cmim_moses_reconstructs_held_out_scaffolds_as_its_card_says():
    with gzip.open(MOSES / "test_scaffolds.csv.gz", "rt") as handle:
        next(handle)
        smiles = [line.strip() for line in itertools.islice(handle, 200)]
    cmim = CMIMTransformer(pretrained="cmim-moses", max_epochs=0).fit(smiles[:1])
    assert cmim.score(smiles) >= 0.45  # the card: 57.5% of 2,000
