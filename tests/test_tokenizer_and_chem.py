from collections import Counter

import pytest
from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

from sklearn_cmim.chem.standardize import MoleculeError, Standardizer, canonical_smiles
from sklearn_cmim.chem.tokenizer import Vocabulary, tokenize
from sklearn_cmim.datasets import load_esol, load_freesolv, load_lipophilicity


def test_tokenize_splits_multi_character_atoms_and_brackets():
    assert tokenize("Clc1ccc(Br)cc1[NH3+]") == [
        "Cl", "c", "1", "c", "c", "c", "(", "Br", ")", "c", "c", "1", "[NH3+]"]
    assert tokenize("C%12CC%12") == ["C", "%12", "C", "C", "%12"]


def test_tokenize_rejects_unreadable_characters():
    with pytest.raises(ValueError, match="cannot read"):
        tokenize("CCK")


def test_vocabulary_round_trip_and_unknown_tokens():
    vocab = Vocabulary.build(["CCO", "c1ccccc1"])
    assert vocab.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    ids = vocab.encode("c1ccccc1O")
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == "c1ccccc1O"
    # Only a finished sequence is a SMILES: one that ends before the positions run out, with no
    # special token inside (dropping one would pass off a molecule the model never wrote).
    body = ids[1:-1]
    assert vocab.decode([*body, vocab.eos_id, vocab.pad_id]) == "c1ccccc1O"
    assert vocab.decode(body) is None
    assert vocab.decode([body[0], vocab.unk_id, *body[1:], vocab.eos_id]) is None
    assert vocab.decode([body[0], vocab.bos_id, vocab.eos_id]) is None
    unknown = Counter()
    ids = vocab.encode("CCBr", unknown)
    assert ids[3] == vocab.unk_id
    assert unknown == Counter({"Br": 1})


def test_vocabulary_does_not_depend_on_corpus_order():
    assert Vocabulary.build(["CCO", "CN"]).tokens == Vocabulary.build(["CN", "CCO"]).tokens


def test_standardizer_keeps_largest_fragment_and_neutralises():
    assert Standardizer()("[Na+].[O-]C(=O)c1ccccc1") == "O=C(O)c1ccccc1"
    assert Standardizer(largest_fragment=False, neutralize=False)("[Na+].[O-]C(=O)C") == "CC(=O)[O-].[Na+]"


def test_standardizer_isomeric_switch():
    smi = "C[C@H](N)C(=O)O"
    assert "@" not in Standardizer()(smi)
    assert "@" in Standardizer(isomeric=True)(smi)


def test_standardizer_accepts_mols_and_gives_same_smiles_for_same_molecule():
    std = Standardizer()
    assert std(Chem.MolFromSmiles("OCC")) == std("CCO") == std("C(O)C")


@pytest.mark.parametrize("written", [
    "[CH3:1][CH2:2][OH:3]",  # atom-mapped, as reaction tools write it
    Chem.AddHs(Chem.MolFromSmiles("CCO")),  # explicit hydrogen atoms, as an SDF read with its Hs
    "[2H]C([2H])C([2H])([2H])O",  # deuterated: the same molecule once isotopes are dropped
])
def test_standardizer_gives_the_plain_molecule_for_maps_hydrogen_atoms_and_deuterium(written):
    assert Standardizer()(written) == "CCO"


def test_standardizer_keeps_deuterium_when_isomeric():
    assert Standardizer(isomeric=True)("[2H]C([2H])([2H])Oc1ccccc1") == "[2H]C([2H])([2H])Oc1ccccc1"


@pytest.mark.parametrize("bad", [
    "", "   ", "C1CC", "not a smiles", "c1cccc1",
    "C" * 25_000,  # refused before RDKit, whose canonical SMILES of such a chain kills the process
    "F[B-](F)(F)F.[H][H-][B-]1([H-][H])[n+]2ccccc2-c2cccc[n+]21",  # HIV: its hydrogens do not come off
])
def test_standardizer_rejects_bad_smiles(bad):
    with pytest.raises(MoleculeError):
        Standardizer()(bad)


def test_canonical_smiles():
    assert canonical_smiles("OCC") == canonical_smiles("CCO")
    assert canonical_smiles("C1CC") is None


def test_standardizer_rejects_molecules_whose_smiles_cannot_be_read_back():
    ferrocene = "[CH-]1C=CC=C1.[CH-]1C=CC=C1.[Fe+2]"
    with pytest.raises(MoleculeError, match="cannot be read back"):
        Standardizer()(ferrocene)


def test_tokenize_reads_dative_bonds():
    assert tokenize("N->[Pt]<-N") == ["N", "-", ">", "[Pt]", "<", "-", "N"]


@pytest.mark.parametrize("options", [{}, {"isomeric": True}, {"largest_fragment": False},
                                     {"neutralize": False}])
def test_standardizer_shortcut_gives_what_both_steps_always_give(options):
    # The standardiser skips fragment choice and uncharging for one uncharged fragment; both
    # steps applied to every molecule are the reference. The bundled data sets hold salts,
    # charges, stereo and isotopes.
    standardizer = Standardizer(**options)

    def reference(smiles):
        mol = Chem.MolFromSmiles(smiles)
        if standardizer.largest_fragment:
            mol = rdMolStandardize.LargestFragmentChooser().choose(mol)
        if standardizer.neutralize:
            mol = rdMolStandardize.Uncharger().uncharge(mol)
        return Chem.MolToSmiles(mol, isomericSmiles=standardizer.isomeric)

    smiles = [s for load in (load_esol, load_freesolv, load_lipophilicity) for s in load()[0]]
    assert any("." in s for s in smiles) and any("+" in s for s in smiles)
    mismatches = [(i, s) for i, s in enumerate(smiles) if standardizer(s) != reference(s)]
    assert not mismatches
