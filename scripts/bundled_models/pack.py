"""Pack the prepared corpora and the validation sets for train_gpu.py (README.md beside this file).

    python scripts/bundled_models/pack.py mix.npz train.csv.gz broad.csv.gz fragments.smi

``mix.npz`` is the ``--prepared`` path of a ``cmim pretrain`` run over those files (one
``mix.N.npz`` per file). The token ids are written lzma-compressed (a seventh of their size, so
they travel with the repository to a GPU machine), with the first 200 held-out molecules of each
corpus and 60 of each of the five MoleculeNet tasks as validation sets, encoded here with RDKit.
"""

import argparse
import json
import lzma
from pathlib import Path

import numpy as np
import pandas as pd

from sklearn_cmim.chem.corpus import Corpus, HoldOut, MoleculeEncoder, validation_set
from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.training.prepared import prepared_path

NAMES = ["moses", "broad", "fragments"]  # the order train_gpu.py mixes them in
MOLECULENET = [
    ("delaney", "smiles"),
    ("freesolv", "smiles"),
    ("lipo", "smiles"),
    ("bace", "mol"),
    ("bbbp", "smiles"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prepared", type=Path, help="the --prepared path of the cmim pretrain run")
    parser.add_argument("inputs", type=Path, nargs=3, help="its corpora: MOSES train, broad, fragments")
    parser.add_argument("--moleculenet", type=Path, default=Path("../shared/data/moleculenet"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = None
    for i, name in enumerate(NAMES):
        with np.load(prepared_path(args.prepared, i, len(NAMES))) as arrays:
            settings = json.loads(str(arrays["settings"]))
            (args.out / f"{name}.tokens.xz").write_bytes(lzma.compress(arrays["tokens"].tobytes(), preset=6))
            np.savez_compressed(
                args.out / f"{name}.meta.npz",
                lengths=np.diff(arrays["offsets"]).astype(np.uint8),
                records=arrays["records"],
                skipped_records=arrays["skipped_records"],
                skipped_reasons=arrays["skipped_reasons"],
                settings=arrays["settings"],
            )
    encoder = MoleculeEncoder(
        Standardizer(**settings["standardizer"]), Vocabulary(settings["vocabulary"]), settings["max_length"]
    )
    split = HoldOut(settings["holdout_every"])
    sets = {
        name: validation_set(Corpus([path]), split, encoder, 200)
        for name, path in zip(NAMES, args.inputs, strict=True)
    }
    rng = np.random.default_rng(0)
    sets["moleculenet"] = []
    for file, column in MOLECULENET:
        smiles = pd.read_csv(args.moleculenet / f"{file}.csv")[column].tolist()
        picked = [encoder(smiles[j]) for j in rng.permutation(len(smiles))[:80]]
        sets["moleculenet"] += [p for p in picked if p is not None][:60]
    (args.out / "validation.json").write_text(
        json.dumps(
            {
                name: [[list(map(int, ids)), smiles] for ids, smiles in molecules]
                for name, molecules in sets.items()
            }
        )
    )
    (args.out / "settings.json").write_text(json.dumps(settings))
    print({name: len(molecules) for name, molecules in sets.items()})


if __name__ == "__main__":
    main()
