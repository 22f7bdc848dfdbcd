"""``cmim export``: turn a pretraining checkpoint into a model directory, e.g. to ship mid-run.

    cmim export runs/zinc/checkpoints/step-00012000.pt models/cmim-zinc --half
"""

from __future__ import annotations

from pathlib import Path

from .common import ArgumentParser, HelpFormatter, plain_warnings, report_error

__all__ = ["build_parser", "export_checkpoint", "main"]


def export_checkpoint(checkpoint: str | Path, directory: str | Path, half: bool = False) -> Path:
    """Write the model held by a ``cmim pretrain`` checkpoint as a ``save_pretrained`` directory.

    The metadata keeps what the finished run would have stored: the learning curve, the training
    log and the run's arguments, with the step reached. So does the latent prior, fitted to the
    run's validation molecules, where its corpora are still where it read them and unchanged; the
    directory has none otherwise (``sample`` then needs ``prior="standard"``), with a warning that
    says why.
    """
    # On use: --help must not load torch or RDKit.
    import warnings

    import torch

    from ..chem.corpus import Corpus, HoldOut, MoleculeEncoder, standardised_set, validation_sets
    from ..chem.standardize import Standardizer
    from ..chem.tokenizer import Vocabulary
    from ..persistence import Pretrained, build_model, save_pretrained
    from ..training.checkpoint import found_again, load_checkpoint, run_corpora
    from ..training.pretraining import held_out_prior

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
    if arguments.get("init_from"):  # a run that continued a pretrained model says which
        metadata["pretraining"]["initialised_from"] = (state.get("initialised_from")
                                                        or {"model": arguments["init_from"]})
    vocabulary, standardizer = Vocabulary(state["vocabulary"]), Standardizer(**state["standardizer"])
    prior = None
    inputs, missing = run_corpora(state)
    needed = ("holdout_every", "validation_size", "batch_size")  # what the run's own validation read
    if not missing and not all(k in arguments for k in needed):
        missing = "the checkpoint does not record how the run held molecules out"
    excluded, gone = found_again([{"path": path} for path in arguments.get("exclude", [])], "--exclude file")
    missing = missing or gone
    if missing:
        warnings.warn(f"{directory} gets no latent prior ({missing}): sample() there needs "
                      "prior='standard'", stacklevel=2)
    else:
        encoder = MoleculeEncoder(standardizer, vocabulary, model.config.max_length,
                                  standardised_set(excluded, standardizer))
        split = HoldOut(arguments["holdout_every"])
        corpora = [Corpus([p], arguments.get("column")) for p in inputs]
        validation = validation_sets(corpora, split, encoder, arguments["validation_size"])
        prior = held_out_prior(model, validation, arguments["batch_size"], torch.device("cpu"))
    return save_pretrained(directory, Pretrained(model, vocabulary, standardizer, metadata, prior), half=half)


def build_parser(prog: str = "cmim export") -> ArgumentParser:
    """The argument parser of ``cmim export``.

    Examples
    --------
    >>> from sklearn_cmim.cli.export import build_parser
    >>> args = build_parser().parse_args(["step-00012000.pt", "cmim-zinc", "--half"])
    >>> args.checkpoint.name, args.output.name, args.half
    ('step-00012000.pt', 'cmim-zinc', True)
    """
    parser = ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by cmim pretrain")
    parser.add_argument("output", type=Path, help="model directory to write")
    parser.add_argument("--half", action="store_true", help="store the weights in float16 (half the size)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the model an existing output directory holds (refused otherwise)")
    return parser


def main(argv=None, prog: str = "cmim export") -> int:
    """Run ``cmim export``: write a checkpoint's model as a ``save_pretrained`` directory.

    Returns
    -------
    status : int
        0 on success; 2 when the checkpoint cannot be read, the directory cannot be written, or it
        holds a model already and ``--overwrite`` was not given (reported in one line on stderr).

    Examples
    --------
    A checkpoint from a two-step ``cmim pretrain`` run of a tiny model, exported and loaded:

    >>> import contextlib, io, tempfile
    >>> from pathlib import Path
    >>> from sklearn_cmim import CMIMTransformer
    >>> from sklearn_cmim.cli import pretrain
    >>> from sklearn_cmim.cli.export import main
    >>> tmp = tempfile.TemporaryDirectory()
    >>> corpus = Path(tmp.name, "alcohols.smi")
    >>> _ = corpus.write_text("".join("C" * n + "O\\n" for n in range(1, 21)))
    >>> tiny = ["--d-model", "16", "--n-heads", "2", "--d-ff", "32", "--n-encoder-layers", "1",
    ...         "--n-decoder-layers", "1", "--n-latents", "1", "--latent-dim", "8",
    ...         "--batch-size", "8", "--holdout-every", "10", "--max-steps", "2", "--device", "cpu"]
    >>> with contextlib.redirect_stdout(io.StringIO()):  # the training log is not the point here
    ...     status = pretrain.main([str(corpus), "--output", str(Path(tmp.name, "run")), *tiny])
    >>> status
    0
    >>> checkpoint = next(Path(tmp.name, "run", "checkpoints").glob("*.pt"))
    >>> checkpoint.name
    'step-00000002.pt'
    >>> main([str(checkpoint), str(Path(tmp.name, "exported"))])  # doctest: +ELLIPSIS
    wrote ...exported
    0
    >>> cmim = CMIMTransformer.from_pretrained(Path(tmp.name, "exported"), embedding="latent")
    >>> cmim.transform(["CCCO"]).shape
    (1, 8)
    >>> tmp.cleanup()
    """
    args = build_parser(prog).parse_args(argv)
    # After parsing: --help must not load torch.
    from ..persistence import CONFIG_FILE
    from ..training.checkpoint import CheckpointError

    # Before any work: the output may be the checkpoint, or the run's finished model.
    if args.output.exists() and not args.output.is_dir():
        return report_error(prog, f"cannot write {args.output}: it is a file, not a model directory")
    if (args.output / CONFIG_FILE).exists() and not args.overwrite:
        return report_error(prog, f"{args.output} already holds a model; choose another directory, or "
                                  "pass --overwrite to replace it")
    try:
        with plain_warnings(prog):
            path = export_checkpoint(args.checkpoint, args.output, args.half)
    except (CheckpointError, OSError, ValueError) as error:  # ValueError: a config that builds no model
        return report_error(prog, error)
    print(f"wrote {path}")
    return 0
