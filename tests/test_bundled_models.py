"""The models shipped inside the package load offline and do what their model cards say."""

import gzip
import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

from sklearn_cmim import CMIMTransformer, list_pretrained
from sklearn_cmim.chem.standardize import canonical_smiles
from tests.conftest import TINY

MOSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "moses"
# Exact reconstruction of the first 200 MOSES test_scaffolds molecules must stay near what each
# card measured on 2,000 (a floor a little under it: 200 molecules are a noisier sample).
CARDS = {"cmim-broad": 0.95, "mim-broad": 0.95}  # cards: 99.8% and 99.9%


def test_every_model_is_bundled():
    assert set(CARDS) <= set(list_pretrained())


@pytest.mark.parametrize("name", CARDS)
def test_bundled_model_embeds_all_of_esol_offline(esol, name):
    model = CMIMTransformer(pretrained=name, max_epochs=0).fit(esol[0][:1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = model.transform(esol[0])
    # ESOL's nitro groups, phosphorus and iodine are in the vocabulary: no <unk> warning.
    assert not [w for w in caught if "<unk>" in str(w.message)]
    assert X.shape == (len(esol[0]), 8 * 32 + 2 * 384) and np.isfinite(X).all()  # mu, mean, max


@pytest.mark.shared_data
@pytest.mark.skipif(not MOSES.is_dir(), reason="needs ../shared/data/moses (present in CI)")
@pytest.mark.parametrize("name", CARDS)
def test_bundled_model_reconstructs_held_out_scaffolds_as_its_card_says(name):
    with gzip.open(MOSES / "test_scaffolds.csv.gz", "rt") as handle:
        next(handle)
        smiles = [line.strip() for line in itertools.islice(handle, 200)]
    model = CMIMTransformer(pretrained=name, max_epochs=0).fit(smiles[:1])
    assert model.score(smiles) >= CARDS[name]


@pytest.mark.parametrize("name", CARDS)
def test_sampling_around_a_molecule_at_the_default_sigma_gives_mostly_valid_molecules(name):
    # The default sigma was read off the cards' validity curves; 30 draws around aspirin.
    model = CMIMTransformer(pretrained=name, max_epochs=0).fit(["C"])
    samples = model.sample(30, random_state=0, around=["CC(=O)Oc1ccccc1C(=O)O"])
    assert sum(canonical_smiles(s) is not None for s in samples) >= 24  # 80%


@pytest.mark.parametrize("name", CARDS)
def test_the_fitted_prior_of_a_bundled_model_samples_valid_molecules_far_more_often_than_n01(name):
    # The cards measured 0.5% and 1.6% valid from N(0, I), 34.5% and 52.1% from the fitted prior
    # (1,000 draws); 60 draws each, with a floor well under those.
    model = CMIMTransformer.from_pretrained(name)
    assert model.latent_prior_.n_molecules == 10_000
    valid = {prior: [c for s in model.sample(60, random_state=0, prior=prior) if (c := canonical_smiles(s))]
             for prior in ("fitted", "standard")}
    assert len(valid["fitted"]) >= 9 and len(valid["fitted"]) > 3 * len(valid["standard"])
    assert len(set(valid["fitted"])) >= 0.9 * len(valid["fitted"])  # not one molecule over and over
    # Loading it with a fit that trains nothing keeps the bundled prior.
    loaded = CMIMTransformer(pretrained=name, max_epochs=0).fit(["CCO", "CCN"])
    assert loaded.latent_prior_ == model.latent_prior_


def test_fine_tuning_a_bundled_model_keeps_its_architecture_and_trains_its_weights(esol):
    frozen = CMIMTransformer(pretrained="cmim-broad", max_epochs=0).fit(esol[0][:1])
    tuned = CMIMTransformer(pretrained="cmim-broad", max_epochs=1, batch_size=8,
                            random_state=0).fit(esol[0][:16])
    assert tuned.model_.config == frozen.model_.config
    before = frozen.model_.decoder.blocks[0].ff[0].weight
    after = tuned.model_.decoder.blocks[0].ff[0].weight
    assert before.shape == after.shape and not np.allclose(before.detach(), after.detach())


def test_from_pretrained_is_the_fitted_estimator_a_load_only_fit_gives(esol):
    from sklearn.base import clone

    loaded = CMIMTransformer.from_pretrained("cmim-broad", embedding="latent")
    fitted = CMIMTransformer(pretrained="cmim-broad", max_epochs=0, embedding="latent").fit(esol[0][:1])
    np.testing.assert_array_equal(loaded.transform(esol[0][:20]), fitted.transform(esol[0][:20]))
    assert loaded.get_params() == fitted.get_params() and loaded.history_ == []
    # A clone (what Pipeline and GridSearchCV fit) loads the same model again.
    refit = clone(loaded).fit(esol[0][:1])
    np.testing.assert_array_equal(refit.transform(esol[0][:5]), loaded.transform(esol[0][:5]))
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        CMIMTransformer.from_pretrained("no-such-model")
    with pytest.raises(ValueError, match="embedding"):
        CMIMTransformer.from_pretrained("cmim-broad", embedding="nope")


@pytest.mark.parametrize("name", ["cmim-broad", "mim-broad"])
def test_broad_models_reconstruct_small_charged_and_heavy_atom_molecules(name):
    # What the earlier MOSES-only models could not: ethanol came back as a 20-atom molecule.
    molecules = ["CCO", "CO", "CC(C)O", "O=[N+]([O-])c1ccccc1", "CCP(=O)(O)O", "Ic1ccccc1"]
    model = CMIMTransformer.from_pretrained(name, embedding="latent")
    decoded = model.inverse_transform(model.transform(molecules))
    assert [canonical_smiles(d) for d in decoded] == [canonical_smiles(m) for m in molecules]


def test_a_directory_named_like_a_bundled_model_is_loaded_only_as_a_path(tmp_path, monkeypatch):
    CMIMTransformer(**TINY).fit(["CCO", "CCN", "CCC", "OCCO"]).save_pretrained(tmp_path / "cmim-broad")
    monkeypatch.chdir(tmp_path)
    shadowed = r"names the bundled model.+give ./cmim-broad to load that one"
    with pytest.warns(UserWarning, match=shadowed) as caught:
        bundled = CMIMTransformer.from_pretrained("cmim-broad", embedding="latent")
    assert caught[0].filename == __file__  # the user's line, not one inside the package
    assert bundled.transform(["CCO"]).shape[1] > TINY["latent_dim"]  # the bundled model, as named
    for path in ("./cmim-broad", Path("cmim-broad")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            own = CMIMTransformer.from_pretrained(path, embedding="latent")
        assert own.transform(["CCO"]).shape == (1, TINY["latent_dim"])
