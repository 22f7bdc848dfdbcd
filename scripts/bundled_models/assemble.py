"""Join the stages of the bundled models' runs into their directories (README.md beside this file).

    python scripts/bundled_models/assemble.py STAGE1 STAGE2 sklearn_cmim/pretrained
    python scripts/bundled_models/assemble.py --after sklearn_cmim/pretrained STAGE3 sklearn_cmim/pretrained
    python scripts/bundled_models/assemble.py --after sklearn_cmim/pretrained --hardware "2 CPU cores" \
        --validation-match "canonical SMILES equal" CPU_STAGE sklearn_cmim/pretrained

Each STAGE holds what train_gpu.py wrote (NAME.config.json, NAME.w*.pt) for one run, each run
continuing the one before. With --after, the first of them continued the bundled models in that
folder (``INIT`` naming them), whose own stages come first. The model gets the last stage's
weights, in float16, and metadata covering every stage: their settings, and one learning curve
and training log with continuous step counts.
"""

import argparse
import json
from pathlib import Path

import torch

from sklearn_cmim.chem.standardize import Standardizer
from sklearn_cmim.chem.tokenizer import Vocabulary
from sklearn_cmim.nn.model import CMIMModel, ModelConfig
from sklearn_cmim.persistence import Pretrained, load_pretrained, save_pretrained

TWINS = {"cmim": "cmim-broad", "mim": "mim-broad"}
HARDWARE = "one NVIDIA H200 GPU, shared with its twin trained side by side"
# What the machine a stage ran on sets: the GPU machine had no RDKit to compare canonical SMILES.
MACHINE = ("hardware", "validation_match")
GPU_MATCH = "decoded string equal to the standardised SMILES (no RDKit on that machine)"


def stages_of(config: dict, machine: dict) -> list[dict]:
    """A run's stages: those an assembled model lists, or one, from the arguments a run stored;
    each with the machine it ran on (``MACHINE``: ``machine`` for a run). A stage trained by steps
    rather than the clock (a CPU stage, over several sittings) has no minutes and gives its batch
    size."""
    run = config["metadata"]["pretraining"]
    if "stages" in run:
        return [{**stage, **{key: stage.get(key, run[key]) for key in MACHINE}} for stage in run["stages"]]
    arguments = run["arguments"]
    stage = {
        "steps": run["steps"],
        "molecules_seen": run["molecules_seen"],
        "learning_rate": arguments["learning_rate"],
        "warmup_steps": arguments["warmup_steps"],
        "minutes": arguments.get("max_minutes"),
        "mim_warmup_steps": arguments["mim_warmup_steps"],
        **machine,
    }
    if stage["minutes"] is None:
        stage["batch_size"] = arguments["batch_size"]
    return [stage]


def in_words(stages: list[dict], key: str) -> str:
    """One of ``MACHINE`` for the whole run: the stages' own, or each with the stages it holds for."""
    values: dict[str, list[int]] = {}
    for number, stage in enumerate(stages, 1):
        values.setdefault(stage[key], []).append(number)
    if len(values) == 1:
        return next(iter(values))
    return "; ".join(f"stage{'s' * (len(numbers) > 1)} {', '.join(map(str, numbers))}: {value}"
                     for value, numbers in values.items())


def shifted(records: list[dict], steps: int, seen: int) -> list[dict]:
    """A later stage's records, counted from the start of the first stage."""
    return [{**r, "step": r["step"] + steps, "molecules_seen": r["molecules_seen"] + seen} for r in records]


def metadata(configs: list[dict], hardware: str = HARDWARE, match: str = GPU_MATCH) -> dict:
    """One model's metadata from the configs of its stages, in the order they ran."""
    stages, curve, log, steps, seen = [], [], [], 0, 0
    for config in configs:
        curve += shifted(config["metadata"]["learning_curve"], steps, seen)
        log += shifted(config["metadata"]["training_log"], steps, seen)
        stages += stages_of(config, {"hardware": hardware, "validation_match": match})
        steps += config["metadata"]["pretraining"]["steps"]
        seen += config["metadata"]["pretraining"]["molecules_seen"]
    first = configs[0]["metadata"]
    run = first["pretraining"]
    by_steps = any(stage["minutes"] is None for stage in stages)
    machine = {key: in_words(stages, key) for key in MACHINE}
    alike = [key for key in MACHINE if len({stage[key] for stage in stages}) == 1]
    for stage in stages:  # stages that ran alike keep the metadata a model of one machine has
        for key in alike:
            del stage[key]
    return {
        "contrastive_weight": first["contrastive_weight"],
        "temperature": first["temperature"],
        "pretraining": {
            "steps": steps,
            "molecules_seen": seen,
            "world_size": 1,
            "skipped_molecules": run["skipped_molecules"],
            "matmul_peak_flops": run["matmul_peak_flops"],
            "hardware": machine["hardware"],
            "schedule": "linear warm-up, then cosine decay to 10% of its peak over its wall time"
                        + (" (over its steps for a stage without minutes)" if by_steps else ""),
            "stages": stages,
            "arguments": {**run["arguments"], "max_steps": steps},
            "validation_match": machine["validation_match"],
        },
        "learning_curve": curve,
        "training_log": log,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stages", type=Path, nargs="+", help="what train_gpu.py wrote, one folder a run")
    parser.add_argument("output", type=Path, help="folder to write the model directories into")
    parser.add_argument("--after", type=Path, metavar="FOLDER",
                        help="the folder of the bundled models that the first stage continued")
    parser.add_argument("--hardware", default=HARDWARE, help="what the given stages ran on")
    parser.add_argument("--validation-match", default=GPU_MATCH,
                        help="how their validation compared a decoding with its molecule (on a machine "
                             "with RDKit: \"canonical SMILES equal\")")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="what pack.py wrote (for the vocabulary)",
    )
    args = parser.parse_args()
    vocabulary = Vocabulary(json.loads((args.data / "settings.json").read_text())["vocabulary"])
    for name, target in TWINS.items():
        configs = [json.loads((folder / f"{name}.config.json").read_text()) for folder in args.stages]
        if args.after:
            earlier = load_pretrained(args.after / target)
            if earlier.vocabulary.tokens != vocabulary.tokens:
                parser.error(f"{args.after / target} has another vocabulary than {args.data}: "
                             "pack the corpora with its vocabulary (prepare.sh does)")
            configs.insert(0, {"metadata": earlier.metadata})
        last = configs[-1]
        state = {}
        for part in sorted(args.stages[-1].glob(f"{name}.w*.pt")):
            state.update(torch.load(part, weights_only=True))
        model = CMIMModel(ModelConfig.from_dict(last["model"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        standardizer = Standardizer(**last["standardizer"])
        joined = metadata(configs, args.hardware, args.validation_match)
        pretrained = Pretrained(model, vocabulary, standardizer, joined)
        save_pretrained(args.output / target, pretrained, half=True)
        print(f"{target}: {model.num_parameters():,} parameters -> {args.output / target}")


if __name__ == "__main__":
    main()
