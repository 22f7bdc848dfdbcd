"""Small molecules for pretraining: BRICS fragments of a corpus's molecules, capped with hydrogen.

Drug-like corpora hold few molecules under a dozen heavy atoms, while solvation and solubility
sets are mostly such molecules (FreeSolv's median is 8). Cutting corpus molecules at their BRICS
bonds and putting hydrogen where the cut was gives many small, real-looking molecules. Molecules
of evaluation sets can be excluded, so that benchmarks read only molecules the model never saw.

    python -m sklearn_cmim.chem.fragments broad.csv.gz moses.csv.gz --output fragments.smi \\
        --exclude delaney.csv freesolv.csv --sample 50000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import BRICS

from .corpus import Corpus, standardised_set
from .smiles_files import check_output, text_output
from .standardize import Standardizer

__all__ = ["brics_fragments", "main"]

DUMMY = Chem.MolFromSmarts("[#0]")


def brics_fragments(smiles: Iterable[str], standardizer: Standardizer, max_heavy_atoms: int = 12,
                    exclude: frozenset[str] = frozenset()) -> list[str]:
    """Distinct standardised fragments of ``smiles`` with at most ``max_heavy_atoms`` heavy atoms.

    Unreadable molecules, and fragments that do not sanitise once capped, are passed over;
    standardised SMILES in ``exclude`` are left out. The result is sorted.

    Examples
    --------
    >>> brics_fragments(["CCOC(=O)c1ccccc1N", "not a molecule"], Standardizer(), max_heavy_atoms=8)
    ['C=O', 'CC', 'Nc1ccccc1', 'O']
    """
    found: set[str] = set()
    for text in smiles:
        mol = Chem.MolFromSmiles(text) if text else None
        if mol is None or mol.GetNumHeavyAtoms() > 100:  # BRICS enumerates far too much on huge ones
            continue
        for piece in BRICS.BRICSDecompose(mol):
            capped = Chem.MolFromSmiles(piece)
            if capped is None:
                continue
            capped = Chem.DeleteSubstructs(capped, DUMMY)
            try:
                Chem.SanitizeMol(capped)
                standard = standardizer(Chem.MolToSmiles(capped))
            except (ValueError, RuntimeError):  # MoleculeError, and the ValueError kinds RDKit raises
                continue
            if Chem.MolFromSmiles(standard).GetNumHeavyAtoms() <= max_heavy_atoms:
                found.add(standard)
    return sorted(found - exclude)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sklearn_cmim.chem.fragments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE", help="SMILES files to cut")
    parser.add_argument("--output", required=True, type=Path, help=".smi file to write, one fragment a line")
    parser.add_argument("--sample", type=int, default=50_000,
                        help="molecules cut from each file, spread evenly over it")
    parser.add_argument("--max-heavy-atoms", type=int, default=12, help="largest fragment kept")
    parser.add_argument("--exclude", nargs="*", type=Path, default=[], metavar="FILE",
                        help="SMILES files whose molecules must not be written (evaluation sets)")
    args = parser.parse_args(argv)
    standardizer = Standardizer()
    try:
        check_output(args.output, *args.inputs)  # now, not after minutes of cutting
        sampled = []
        for path in args.inputs:
            corpus = Corpus([path])
            stride = max(1, corpus.count() // args.sample)
            sampled.extend(islice((text for number, text in corpus.records() if number % stride == 0),
                                  args.sample))
        exclude = standardised_set(args.exclude, standardizer)
    except ValueError as error:  # CorpusError is one
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    fragments = brics_fragments(sampled, standardizer, args.max_heavy_atoms, exclude)
    with text_output(args.output) as handle:  # a failed run leaves no half-written file
        handle.writelines(f + "\n" for f in fragments)
    print(f"{len(fragments):,} fragments of {len(sampled):,} molecules written to {args.output} "
          f"({len(exclude):,} excluded molecules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
