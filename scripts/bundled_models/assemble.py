"""Join the two stages of the GPU run into the bundled model directories (README.md beside this file).

    python scripts/bundled_models/assemble.py STAGE1 STAGE2 sklearn_cmim/pretrained

STAGE1 and STAGE2 hold what train_gpu.py wrote (NAME.config.json, NAME.w*.pt) for the first run
and for its continuation. The model gets stage 2's weights, in float16, and metadata covering
both stages: their settings, and one learning curve and training log with continuous step counts.
"""

import argparse
import json
from pathlib import Path

import torch

from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.nn.model import CMIMModel, ModelConfig
from sklearn_cmim.persistence import Pretrained, save_pretrained

TWINS = {"cmim": "cmim-broad", "mim": "mim-broad"}


def stage(config: dict) -> dict:
    """One stage's settings, from the arguments its run stored with the model."""
    run = config["metadata"]["pretraining"]
    arguments = run["arguments"]
    return {
        "steps": run["steps"],
        "molecules_seen": run["molecules_seen"],
        "learning_rate": arguments["learning_rate"],
        "warmup_steps": arguments["warmup_steps"],
        "minutes": arguments["max_minutes"],
        "mim_warmup_steps": arguments["mim_warmup_steps"],
    }


def metadata(first: dict, second: dict) -> dict:
    stages = [stage(first), stage(second)]
    steps, seen = stages[0]["steps"], stages[0]["molecules_seen"]

    def shifted(records):  # stage 2's records, counted from the start of stage 1
        return [
            {**r, "step": r["step"] + steps, "molecules_seen": r["molecules_seen"] + seen} for r in records
        ]

    run = first["metadata"]["pretraining"]
    return {
        "contrastive_weight": first["metadata"]["contrastive_weight"],
        "temperature": first["metadata"]["temperature"],
        "pretraining": {
            "steps": sum(s["steps"] for s in stages),
            "molecules_seen": sum(s["molecules_seen"] for s in stages),
            "world_size": 1,
            "skipped_molecules": run["skipped_molecules"],
            "matmul_peak_flops": run["matmul_peak_flops"],
            "hardware": "one NVIDIA H200 GPU, shared with its twin trained side by side",
            "schedule": "linear warm-up, then cosine decay to 10% of its peak over its wall time",
            "stages": stages,
            "arguments": {**run["arguments"], "max_steps": sum(s["steps"] for s in stages)},
            "validation_match": "decoded string equal to the standardised SMILES (no RDKit on that machine)",
        },
        "learning_curve": first["metadata"]["learning_curve"] + shifted(second["metadata"]["learning_curve"]),
        "training_log": first["metadata"]["training_log"] + shifted(second["metadata"]["training_log"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage1", type=Path)
    parser.add_argument("stage2", type=Path)
    parser.add_argument("output", type=Path, help="folder to write the model directories into")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="what pack.py wrote (for the vocabulary)",
    )
    args = parser.parse_args()
    vocabulary = Vocabulary(json.loads((args.data / "settings.json").read_text())["vocabulary"])
    for name, target in TWINS.items():
        first, second = (
            json.loads((folder / f"{name}.config.json").read_text()) for folder in (args.stage1, args.stage2)
        )
        state = {}
        for part in sorted(args.stage2.glob(f"{name}.w*.pt")):
            state.update(torch.load(part, weights_only=True))
        model = CMIMModel(ModelConfig.from_dict(second["model"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        save_pretrained(
            args.output / target,
            Pretrained(model, vocabulary, Standardizer(**second["standardizer"]), metadata(first, second)),
            half=True,
        )
        print(f"{target}: {model.num_parameters():,} parameters -> {args.output / target}")


if __name__ == "__main__":
    main()
