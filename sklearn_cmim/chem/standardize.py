"""Molecules in, standardised canonical SMILES out (docs/method.md, Data path).

Every SMILES string or RDKit ``Mol`` that reaches the model goes through :class:`Standardizer`,
so that the same molecule written two ways gets the same tokens.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import asdict, dataclass

from rdkit import Chem, RDLogger
from rdkit.Chem.MolStandardize import rdMolStandardize

__all__ = ["MoleculeError", "Standardizer", "canonical_smiles"]

# RDKit prints every parse failure to stderr; the package reports them itself, with the index.
RDLogger.DisableLog("rdApp.*")

# Far beyond any model's max_length; RDKit's canonical SMILES of a chain of some 20,000 atoms
# overflows the C stack and kills the process.
MAX_CHARACTERS = 10_000
CHARGED_ATOM = Chem.MolFromSmarts("[!+0]")  # matched in C++: 7x faster than a Python loop over atoms


class MoleculeError(ValueError):
    """An input item that is not a usable molecule (the message says why)."""


@dataclass(frozen=True)
class Standardizer:
    """How an input molecule becomes the SMILES string the model reads.

    Parameters
    ----------
    largest_fragment : bool, default=True
        Keep only the largest covalent fragment (drops salts and solvents).
    neutralize : bool, default=True
        Neutralise charges where a neutral form exists.
    isomeric : bool, default=False
        Keep stereochemistry and isotopes in the SMILES. Off by default because the bundled
        models read their corpora without them, so stereo tokens would be unknown to them.

    Examples
    --------
    A salt and its parent acid give the same SMILES:

    >>> from sklearn_cmim import Standardizer
    >>> Standardizer()("OC(=O)c1ccccc1.[Na+]")
    'O=C(O)c1ccccc1'
    >>> Standardizer()("[O-]C(=O)c1ccccc1")
    'O=C(O)c1ccccc1'
    >>> Standardizer(isomeric=True)("C[C@H](N)C(=O)O")
    'C[C@H](N)C(=O)O'

    Atom maps, explicit hydrogen atoms and (unless isomeric) deuterium leave the molecule as written
    without them:

    >>> Standardizer()("[CH3:1][CH2:2][OH:3]"), Standardizer()("[2H]C([2H])([2H])Oc1ccccc1")
    ('CCO', 'COc1ccccc1')
    """

    largest_fragment: bool = True
    neutralize: bool = True
    isomeric: bool = False

    def __call__(self, molecule: str | Chem.Mol) -> str:
        """Return the standardised canonical SMILES, or raise :class:`MoleculeError`."""
        mol = to_mol(molecule)
        # Most molecules are one uncharged fragment, which neither step changes; skipping both
        # for them halves the cost of standardising, which bounds how fast pretraining reads
        # its corpus. Any other molecule takes both, as copying it also re-perceives its stereo.
        if len(Chem.GetMolFrags(mol)) > 1 or mol.HasSubstructMatch(CHARGED_ATOM):
            if self.largest_fragment:
                mol = rdMolStandardize.LargestFragmentChooser().choose(mol)
            if self.neutralize:
                mol = rdMolStandardize.Uncharger().uncharge(mol)
        smiles = Chem.MolToSmiles(mol, isomericSmiles=self.isomeric, canonical=True)
        if "[H" in smiles or ":" in smiles:  # a string test spares the common molecule a loop over atoms
            with suppress(Exception):  # where RDKit cannot take them off (hydrides), they stay
                smiles = Chem.MolToSmiles(self._plain(mol), isomericSmiles=self.isomeric, canonical=True)
        if not smiles:
            raise MoleculeError("molecule has no atoms")
        # Some molecules (metallocenes, hypervalent ions) come out as SMILES RDKit itself cannot
        # read back; the model would see a string no decoder output could ever match. A SMILES
        # that comes out as it went in was just read: a corpus already standardised (MOSES) skips
        # the second parse, a third of the cost.
        if smiles != molecule and Chem.MolFromSmiles(smiles) is None:
            raise MoleculeError(f"its standardised SMILES {smiles!r} cannot be read back by RDKit")
        return smiles

    def _plain(self, mol: Chem.Mol) -> Chem.Mol:
        """``mol`` without atom-map numbers and without hydrogen atoms its SMILES would spell out:
        explicit ones (a Mol after ``AddHs``) and, unless isomeric, isotopic ones (deuterium would
        otherwise come out as ``[H]`` atoms). The same molecule, written as any other SMILES is."""
        mol = Chem.Mol(mol)
        for atom in mol.GetAtoms():
            atom.SetAtomMapNum(0)
            if not self.isomeric and atom.GetAtomicNum() == 1:
                atom.SetIsotope(0)
        return Chem.RemoveHs(mol)

    def to_dict(self) -> dict:
        return asdict(self)


def to_mol(molecule: str | Chem.Mol) -> Chem.Mol:
    """Parse a SMILES string (or check a ``Mol``), raising :class:`MoleculeError` when unusable."""
    if isinstance(molecule, Chem.Mol):
        mol = Chem.Mol(molecule)
        try:
            Chem.SanitizeMol(mol)
        except Exception as error:  # RDKit raises several unrelated types here
            raise MoleculeError(f"RDKit cannot sanitise this Mol ({error})") from None
        return mol
    if not isinstance(molecule, str):
        raise TypeError(f"expected a SMILES string or an RDKit Mol, got {type(molecule).__name__}")
    if not molecule.strip():
        raise MoleculeError("empty SMILES")
    if len(molecule.split()) > 1:  # RDKit would read what follows as a name and drop it unseen
        raise MoleculeError("it contains whitespace, after which RDKit would read only a name")
    if len(molecule) > MAX_CHARACTERS:
        raise MoleculeError(f"it is {len(molecule):,} characters long, over the {MAX_CHARACTERS:,} "
                            "read (RDKit can crash on longer chains)")
    try:
        mol = Chem.MolFromSmiles(molecule)
    except UnicodeEncodeError:  # a lone surrogate (e.g. from a bad decode) cannot even reach RDKit
        mol = None
    if mol is None:
        raise MoleculeError("RDKit cannot parse this SMILES")
    return mol


def canonical_smiles(smiles: str) -> str | None:
    """RDKit canonical SMILES, used to compare molecules; None if unparsable."""
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return None if mol is None else Chem.MolToSmiles(mol)
