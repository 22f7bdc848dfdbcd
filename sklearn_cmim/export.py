"""``cmim export``: turn a pretraining checkpoint into a model directory, e.g. to ship mid-run.

    cmim export runs/zinc/checkpoints/step-00012000.pt sklearn_cmim/pretrained/cmim-zinc --half
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint
from .chem import Standardizer
from .cli import ArgumentParser, HelpFormatter, report_error
from .persistence import Pretrained, build_model, save_pretrained
from .tokenizer import Vocabulary

__all__ = ["build_parser", "export_checkpoint", "main"]


def export_checkpoint(checkpoint: str | Path, directory: str | Path, half: bool = False) -> Path:
    """Write the model held by a ``cmim pretrain`` checkpoint as a ``save_pretrained`` directory.

    The metadata keeps what the finished run would have stored: the learning curve, the training
    log and the run's arguments, with the step reached.
    """
    state = load_checkpoint(checkpoint)
    model = build_model(state["config"], {k: v.float() if v.is_floating_point() else v
                                          for k, v in state["model"].items()}, str(checkpoint))
    arguments = state.get("arguments", {})
    world_size = state.get("world_size", 1)
    metadata = {
        "contrastive_weight": arguments.get("contrastive_weight"),
        "temperature": arguments.get("temperature"),
        "pretraining": {"steps": state["step"], "world_size": world_size,
                        "molecules_seen": state["step"] * arguments.get("batch_size", 0) * world_size,
                        "arguments": arguments, "exported_from": Path(checkpoint).name},
        "learning_curve": state["history"]["validation"],
        "training_log": state["history"]["training"],
    }
    pretrained = Pretrained(model, Vocabulary(state["vocabulary"]), Standardizer(**state["standardizer"]),
                            metadata)
    return save_pretrained(directory, pretrained, half=half)


def build_parser(prog: str = "cmim export") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by cmim pretrain")
    parser.add_argument("output", type=Path, help="model directory to write")
    parser.add_argument("--half", action="store_true", help="store the weights in float16 (half the size)")
    return parser


def main(argv=None, prog: str = "cmim export") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        path = export_checkpoint(args.checkpoint, args.output, args.half)
    except (CheckpointError, OSError) as error:
        return report_error(prog, error)
    print(f"wrote {path}")
    return 0
