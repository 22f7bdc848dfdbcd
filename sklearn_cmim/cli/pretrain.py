"""``cmim pretrain``: train a cMIM model on SMILES files, on one device or under ``torchrun``.

    cmim pretrain zinc.smi --output runs/zinc --max-steps 100000
    torchrun --nproc_per_node=8 -m sklearn_cmim.cli.pretrain zinc.csv.gz --output runs/zinc --resume

One training loop serves both: under ``torchrun`` each rank trains on its share of the records
inside DistributedDataParallel and draws contrastive negatives from the global batch; rank 0
alone logs, validates and writes. The result is a model directory for
``CMIMTransformer(pretrained=...)``, with the checkpoints in its ``checkpoints/`` folder.

This module is the command: :func:`build_parser` and :func:`main`. The training loop is
:mod:`sklearn_cmim.training.pretraining`, imported when the command runs, so ``--help`` loads no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ARCHITECTURE, ModelConfig, TrainSettings
from .common import (
    ArgumentParser,
    HelpFormatter,
    add_options,
    checked,
    given_options,
    non_negative_float,
    non_negative_int,
    plain_warnings,
    positive_float,
    positive_int,
    probability,
    random_seed,
    report_error,
    run_interruptible,
)

__all__ = ["build_parser", "main"]

MODEL = ModelConfig(vocab_size=0)  # the defaults, shared with CMIMTransformer
TRAIN = TrainSettings()
# Where pretraining departs from the estimator: a large corpus is seen a few times at most, so
# dropout buys nothing and costs step time, and a larger batch keeps the matmuls busier (model
# FLOP utilisation, ``python -m benchmarks.performance.pretrain_throughput``). 128 suits a CPU; the bundled
# models were trained on a GPU with --batch-size 1024 --learning-rate 1e-3 (their model cards).
PRETRAIN_BATCH_SIZE, PRETRAIN_DROPOUT = 128, 0.0


DESCRIPTION = "Train a cMIM model on SMILES files, on one device or as a torchrun (DDP) job."
EXAMPLES = """examples:
  cmim pretrain zinc.smi --output runs/zinc --max-steps 100000
  torchrun --nproc_per_node=8 -m sklearn_cmim.cli.pretrain zinc.csv.gz --output runs/zinc --resume

The output directory loads with CMIMTransformer(pretrained=DIR); checkpoints live in DIR/checkpoints."""

MODEL_HELP = dict(zip(ARCHITECTURE, (
    "Transformer width H", "attention heads", "feed-forward width", "Perceiver encoder blocks",
    "decoder blocks", "latent vectors K", "size D of each latent vector",
    "longest molecule in tokens with <bos>/<eos>; longer ones are skipped"), strict=True))


def build_parser(prog: str = "cmim pretrain") -> ArgumentParser:
    """The argument parser of ``cmim pretrain``; the model options default to ``CMIMTransformer``'s.

    Examples
    --------
    >>> from sklearn_cmim.cli.pretrain import build_parser
    >>> args = build_parser().parse_args(["zinc.smi", "--output", "runs/zinc", "--max-steps", "100"])
    >>> args.inputs, args.output.name, args.max_steps, args.d_model, args.batch_size, args.dropout
    (['zinc.smi'], 'zinc', 100, 256, 128, 0.0)
    """
    parser = ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EXAMPLES,
                            formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("inputs", nargs="+", metavar="FILE",
                      help="SMILES files: .smi, .txt, .csv, each optionally .gz (e.g. .csv.gz). Each "
                           "file is a corpus with its own held-out records; batches are drawn by --weights")
    data.add_argument("--weights", nargs="+", type=weight, metavar="W",
                      help="one sampling weight per FILE, given after the files: its share of the "
                           "batches (default: equal)")
    data.add_argument("--column",
                      help="CSV column holding the SMILES (default: one named smiles, else the first)")
    data.add_argument("--exclude", nargs="+", default=[], metavar="FILE",
                      help="SMILES files (given after the input files) of molecules to keep out of "
                           "pretraining, such as the sets you will evaluate on: a record that standardises "
                           "to one of them is skipped (counted as excluded), whatever salt, charge or stereo "
                           "mark it is written with")
    data.add_argument("--holdout-every", type=checked(int, lambda v: v >= 2, "at least 2"), default=1000,
                      help="hold out every N-th record (records 0, N, 2N, ...) for validation")
    data.add_argument("--validation-size", type=positive_int, default=512,
                      help="held-out molecules of each corpus scored at each validation")
    data.add_argument("--vocab-records", type=positive_int, default=100_000,
                      help="learn the vocabulary from N records spread over each corpus")
    data.add_argument("--vocab-min-count", type=positive_int, default=1,
                      help="give an id only to tokens held by at least this many of those molecules; "
                           "molecules with a rarer token are skipped")
    data.add_argument("--vocab-from", metavar="MODEL",
                      help="take the vocabulary from this pretrained model (directory or bundled name)")
    data.add_argument("--largest-fragment", action=argparse.BooleanOptionalAction, default=True,
                      help="standardiser: keep the largest fragment")
    data.add_argument("--neutralize", action=argparse.BooleanOptionalAction, default=True,
                      help="standardiser: neutralise charges")
    data.add_argument("--isomeric", action=argparse.BooleanOptionalAction, default=False,
                      help="standardiser: keep stereochemistry and isotopes")
    data.add_argument("--pool-batches", type=positive_int, default=50,
                      help="batches read at a time and grouped by length")
    data.add_argument("--data-workers", type=non_negative_int, default=0,
                      help="processes that standardise and tokenise ahead of training (0: the training "
                           "process does); on a GPU, whose steps outrun one core's RDKit, use several")
    data.add_argument("--prepared", type=Path, metavar="PATH",
                      help="standardise and tokenise the whole corpus once (with --data-workers), store "
                           "the ids in PATH (.npz) and train from memory; a later run or --resume loads "
                           "PATH. For corpora that fit in memory (MOSES: an 84 MB file)")

    model = parser.add_argument_group("model (with --resume the checkpoint's are used)")
    model.add_argument("--init-from", metavar="MODEL",
                       help="continue training this pretrained model (directory or bundled name): its "
                            "architecture and standardiser are kept (their options are then an error), its "
                            "vocabulary is extended with the corpus's new tokens and its position table to "
                            "--max-length")
    for name, help_ in MODEL_HELP.items():
        model.add_argument("--" + name.replace("_", "-"), type=positive_int, default=getattr(MODEL, name),
                           help=help_)
    model.add_argument("--dropout", type=probability, default=PRETRAIN_DROPOUT, help="dropout rate")
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, default=MODEL.bias,
                       help="bias terms in the attention and MLP layers (models trained before the "
                            "option have them; without, a CPU step is about 5%% faster)")

    loss = parser.add_argument_group("loss and optimisation")
    loss.add_argument("--contrastive-weight", type=non_negative_float, default=TRAIN.contrastive_weight,
                      help="lambda; 0 is plain A-MIM")
    loss.add_argument("--temperature", type=positive_float, default=TRAIN.temperature,
                      help="contrastive temperature tau")
    loss.add_argument("--contrastive-positive", choices=("self", "mean"), default=TRAIN.contrastive_positive,
                      help="positive of the contrastive term: the code itself or its posterior mean")
    loss.add_argument("--mim-warmup-steps", type=non_negative_int, default=TRAIN.mim_warmup_steps,
                      help="steps over which the MIM latent term's weight ramps from 0 to 1")
    loss.add_argument("--batch-size", type=positive_int, default=PRETRAIN_BATCH_SIZE,
                      help="molecules per process and step (the global batch is this x processes)")
    loss.add_argument("--learning-rate", type=positive_float, default=TRAIN.learning_rate,
                      help="AdamW peak rate (linear warm-up, then cosine decay to 10%%)")
    loss.add_argument("--warmup-steps", type=positive_int,
                      help="steps of the learning rate's linear warm-up (default: 1%% of --max-steps)")
    loss.add_argument("--weight-decay", type=non_negative_float, default=TRAIN.weight_decay,
                      help="AdamW weight decay on matrices")
    loss.add_argument("--max-steps", type=positive_int, default=10_000,
                      help="optimiser steps in all (the learning-rate schedule spans them)")
    loss.add_argument("--max-minutes", type=positive_float, metavar="M",
                      help="also stop after M minutes of training, validations and checkpoints included "
                           "(a resumed run counts those before its checkpoint); the learning rate then "
                           "decays over the minutes or the steps, whichever is further along")

    run = parser.add_argument_group("run")
    run.add_argument("--output", required=True, type=Path, metavar="DIR",
                     help="model directory to write; checkpoints go to DIR/checkpoints")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest readable checkpoint in DIR/checkpoints, if any")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the model DIR already holds (refused otherwise, unless --resume)")
    run.add_argument("--checkpoint-every-steps", type=positive_int, default=1000, help="checkpoint interval")
    run.add_argument("--checkpoint-every-minutes", type=positive_float, default=30.0,
                     help="also checkpoint after this long (checked at logging steps)")
    run.add_argument("--keep-checkpoints", type=positive_int, default=3, help="newest checkpoints kept")
    run.add_argument("--validation-every", type=positive_int, default=1000, help="steps between validations")
    run.add_argument("--log-every", type=positive_int, default=100, help="steps between log lines")
    add_options(run, "--device")
    run.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                     help="auto: bf16 autocast where the hardware has native bf16")
    run.add_argument("--random-state", type=random_seed, default=0,
                     help="seed of weights, batch order, dropout and latent noise")
    return parser


# What --init-from takes from the model it continues (a --no-... form counts as its option too);
# --max-length may still grow its position table.
KEPT_BY_INIT_FROM = (*(name for name in ARCHITECTURE if name != "max_length"), "bias", "largest_fragment",
                     "neutralize", "isomeric")


def weight(text: str) -> float:
    """A ``--weights`` value. ``--weights`` takes every number after it, so it goes after the
    files, and a file name in its place gets that advice."""
    try:
        return non_negative_float(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error}; give --weights after the input files "
                                         "(cmim pretrain A.smi B.csv --weights 1 3)") from None


def check_combinations(parser: ArgumentParser, args) -> None:
    """Options that each parse but contradict one another: ``parser.error`` on the first."""
    if args.d_model % args.n_heads:
        parser.error(f"--d-model ({args.d_model}) must be a multiple of --n-heads ({args.n_heads})")
    if args.warmup_steps is not None and args.warmup_steps >= args.max_steps:
        parser.error(f"--warmup-steps ({args.warmup_steps}) must be below --max-steps ({args.max_steps}): "
                     "the learning rate would never warm up to --learning-rate and decay")
    if args.weights is not None and len(args.weights) != len(args.inputs):
        parser.error(f"--weights takes one weight per FILE: {len(args.inputs)} file(s), "
                     f"{len(args.weights)} weight(s)")
    if args.weights is not None and not any(args.weights):
        parser.error("--weights: at least one weight must be above 0")


def check_arguments(parser: ArgumentParser, args, rebuild, argv):
    """``args``, checked before any work as argparse cannot (``parser.error`` on a problem), with
    ``--max-length`` set to 0 under ``--init-from`` when not given: the continued model's own."""
    check_combinations(parser, args)
    if args.init_from and args.vocab_from:
        parser.error("--init-from keeps that model's vocabulary (extended): drop --vocab-from")
    given = given_options(rebuild, argv, (*KEPT_BY_INIT_FROM, "max_length")) if args.init_from else []
    if kept := [flag for flag in given if flag != "--max-length"]:
        parser.error(f"--init-from keeps that model's architecture and standardiser: drop {', '.join(kept)}")
    if args.init_from and "--max-length" not in given:
        args.max_length = 0  # the continued model's own length, unless asked to extend it
    from ..persistence import CONFIG_FILE  # after parsing: --help must not load torch

    # Before any work: a finished model, or the prepared corpus's folder, must not fail the end.
    if (args.output / CONFIG_FILE).exists() and not (args.resume or args.overwrite):
        parser.error(f"{args.output} already holds a model; choose another --output, --resume its "
                     "run, or pass --overwrite to replace it")
    if args.prepared is not None and (args.prepared.is_dir() or not args.prepared.parent.is_dir()):
        why = "it is a directory" if args.prepared.is_dir() else f"{args.prepared.parent} does not exist"
        parser.error(f"--prepared {args.prepared}: {why}; give a file path in an existing directory")
    if missing := [path for path in args.exclude if not Path(path).is_file()]:
        parser.error(f"--exclude: no such file: {', '.join(missing)}")
    args.exclude = [str(Path(path).resolve()) for path in args.exclude]  # for cmim export, run anywhere
    return args


def main(argv=None, prog: str = "cmim pretrain") -> int:
    """Run ``cmim pretrain`` with ``argv``; user errors are reported in one line (exit status 2).

    Returns
    -------
    status : int
        0 once the model directory is written; 1 when training diverged (non-finite loss), and
        under ``torchrun`` on the other ranks when rank 0 stopped the job with an error; 2 after a
        user error (unreadable corpus, checkpoints in the way, a bad ``--vocab-from``).

    Raises
    ------
    SystemExit
        With status 2 when ``argv`` cannot be parsed or ``--d-model`` is not a multiple of
        ``--n-heads`` (reported in one line on stderr), or 0 after ``--help``.

    Examples
    --------
    Two steps of a tiny model on twenty alcohols; the log lines hold the measured speeds:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn_cmim import CMIMTransformer
    >>> from sklearn_cmim.cli.pretrain import main
    >>> tmp = tempfile.TemporaryDirectory()
    >>> corpus = Path(tmp.name, "alcohols.smi")
    >>> _ = corpus.write_text("".join("C" * n + "O\\n" for n in range(1, 21)))
    >>> tiny = ["--d-model", "16", "--n-heads", "2", "--d-ff", "32", "--n-encoder-layers", "1",
    ...         "--n-decoder-layers", "1", "--n-latents", "1", "--latent-dim", "8",
    ...         "--batch-size", "8", "--holdout-every", "10", "--max-steps", "2", "--device", "cpu"]
    >>> output = Path(tmp.name, "run")
    >>> main([str(corpus), "--output", str(output), *tiny])  # doctest: +ELLIPSIS
    9,008 parameters | vocabulary 6 tokens | 1 process(es) on cpu | ...
    step 2/2 | epoch 0 | loss ...
    validation step 2 | 16 molecules seen | exact reconstruction ...
    checkpoint ...step-00000002.pt
    saved the model to ...run (step 2; skipped molecules: none)
    0
    >>> sorted(p.name for p in output.iterdir())
    ['checkpoints', 'config.json', 'vocab.json', 'weights.pt']
    >>> cmim = CMIMTransformer.from_pretrained(output)
    >>> cmim.transform(["CCCO"]).shape
    (1, 40)
    >>> tmp.cleanup()
    """
    parser = build_parser(prog)
    args = check_arguments(parser, parser.parse_args(argv), lambda: build_parser(prog), argv)
    from ..chem.corpus import CorpusError
    from ..training.checkpoint import CheckpointError
    from ..training.distributed import StoppedByMain
    from ..training.fit import NonFiniteLossError
    from ..training.pretraining import pretrain

    try:
        pretrain(args)
    except StoppedByMain:  # under torchrun: rank 0 stopped the job and says why
        return 1
    except (CorpusError, CheckpointError) as error:
        return report_error(prog, error)
    except NonFiniteLossError as error:
        report_error(prog, f"training diverged ({error}); --resume from the last checkpoint "
                           "with a lower --learning-rate")
        return 1
    return 0


if __name__ == "__main__":  # how torchrun starts each process
    with plain_warnings("cmim pretrain"):
        sys.exit(run_interruptible("cmim pretrain", main))
