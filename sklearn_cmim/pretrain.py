"""``cmim pretrain``: train a cMIM model on SMILES files, on one device or under ``torchrun``.

    cmim pretrain zinc.smi --output runs/zinc --max-steps 100000
    torchrun --nproc_per_node=8 -m sklearn_cmim.pretrain zinc.csv.gz --output runs/zinc --resume

One training loop serves both: under ``torchrun`` each rank trains on its share of the records
inside DistributedDataParallel and draws contrastive negatives from the global batch; rank 0
alone logs, validates and writes. The result is a model directory for
``CMIMTransformer(pretrained=...)``, with the checkpoints in its ``checkpoints/`` folder.

Read top-down: :func:`build_parser`, :func:`main`, :func:`pretrain` (set-up and the training loop),
:class:`Run` (what a checkpoint holds), then the helpers they call. What the loop reports (log
lines, throughput, validation) lives in :mod:`sklearn_cmim.reporting`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from .batching import pad
from .checkpoint import (
    CheckpointError,
    Checkpoints,
    CheckpointSchedule,
    capture_rng,
    check_writable,
    load_checkpoint,
    restore_rng,
)
from .chem import Standardizer
from .cli import (
    ArgumentParser,
    HelpFormatter,
    checked,
    device_name,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    report_error,
)
from .corpus import (
    BatchStream,
    Corpus,
    CorpusError,
    HoldOut,
    MixedStream,
    MoleculeEncoder,
    build_vocabulary,
    validation_set,
)
from .device import autocast, resolve_device, resolve_precision
from .distributed import Context, LatentGather
from .flops import matmul_peak_flops
from .model import CMIMModel, ModelConfig
from .persistence import Pretrained, load_pretrained, save_pretrained
from .prepared import PreparedCorpus, PreparedStream
from .reporting import Meter, format_record, format_validation, validate_corpora
from .tokenizer import Vocabulary
from .training import (
    NonFiniteLossError,
    StepSkipper,
    TrainSettings,
    make_optimizer,
    make_scheduler,
    train_step,
)

__all__ = ["build_parser", "main", "pretrain"]

MODEL = ModelConfig(vocab_size=0)  # the defaults, shared with CMIMTransformer
TRAIN = TrainSettings()
# Where pretraining departs from the estimator: a large corpus is seen a few times at most, so
# dropout buys nothing and costs step time, and a larger batch keeps the matmuls busier (model
# FLOP utilisation, ``python benchmarks/pretrain_throughput.py``). 128 suits a CPU; the bundled
# models were trained on a GPU with --batch-size 1024 --learning-rate 1e-3 (their model cards).
PRETRAIN_BATCH_SIZE, PRETRAIN_DROPOUT = 128, 0.0


DESCRIPTION = "Train a cMIM model on SMILES files, on one device or as a torchrun (DDP) job."
EXAMPLES = """examples:
  cmim pretrain zinc.smi --output runs/zinc --max-steps 100000
  torchrun --nproc_per_node=8 -m sklearn_cmim.pretrain zinc.csv.gz --output runs/zinc --resume

The output directory loads with CMIMTransformer(pretrained=DIR); checkpoints live in DIR/checkpoints."""

MODEL_HELP = {
    "d_model": "Transformer width H", "n_heads": "attention heads", "d_ff": "feed-forward width",
    "n_encoder_layers": "Perceiver encoder blocks", "n_decoder_layers": "decoder blocks",
    "n_latents": "latent vectors K", "latent_dim": "size D of each latent vector",
    "max_length": "longest molecule in tokens with <bos>/<eos>; longer ones are skipped",
}


def build_parser(prog: str = "cmim pretrain") -> ArgumentParser:
    """The argument parser of ``cmim pretrain``; the model options default to ``CMIMTransformer``'s.

    Parameters
    ----------
    prog : str, default="cmim pretrain"
        Program name shown in usage and error messages.

    Returns
    -------
    parser : argparse.ArgumentParser
        Its errors are one line on stderr and exit status 2.

    Examples
    --------
    >>> from sklearn_cmim.pretrain import build_parser
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
    data.add_argument("--weights", nargs="+", type=non_negative_float, metavar="W",
                      help="one sampling weight per FILE: its share of the batches (default: equal)")
    data.add_argument("--column",
                      help="CSV column holding the SMILES (default: one named smiles, else the first)")
    data.add_argument("--holdout-every", type=checked(int, lambda v: v >= 2, "at least 2"), default=1000,
                      help="hold out every N-th record (records 0, N, 2N, ...) for validation")
    data.add_argument("--validation-size", type=positive_int, default=512,
                      help="held-out molecules scored at each validation")
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
                            "architecture and standardiser are kept, its vocabulary is extended with the "
                            "corpus's new tokens and its position table to --max-length")
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
                      help="AdamW peak rate (1%% warm-up, cosine decay to 10%%)")
    loss.add_argument("--weight-decay", type=non_negative_float, default=TRAIN.weight_decay,
                      help="AdamW weight decay on matrices")
    loss.add_argument("--max-steps", type=positive_int, default=10_000,
                      help="optimiser steps in all (the learning-rate schedule spans them)")

    run = parser.add_argument_group("run")
    run.add_argument("--output", required=True, type=Path, metavar="DIR",
                     help="model directory to write; checkpoints go to DIR/checkpoints")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest readable checkpoint in DIR/checkpoints, if any")
    run.add_argument("--checkpoint-every-steps", type=positive_int, default=1000, help="checkpoint interval")
    run.add_argument("--checkpoint-every-minutes", type=positive_float, default=30.0,
                     help="also checkpoint after this long (checked at logging steps)")
    run.add_argument("--keep-checkpoints", type=positive_int, default=3, help="newest checkpoints kept")
    run.add_argument("--validation-every", type=positive_int, default=1000, help="steps between validations")
    run.add_argument("--log-every", type=positive_int, default=100, help="steps between log lines")
    run.add_argument("--device", type=device_name, help="torch device (default: cuda, then mps, then cpu)")
    run.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                     help="auto: bf16 autocast where the hardware has native bf16")
    run.add_argument("--random-state", type=non_negative_int, default=0,
                     help="seed of weights, batch order, dropout and latent noise")
    return parser


def main(argv=None, prog: str = "cmim pretrain") -> int:
    """Run ``cmim pretrain`` with ``argv``; user errors are reported in one line (exit status 2).

    Parameters
    ----------
    argv : list of str, optional
        The command's arguments, without the program name; ``None`` reads ``sys.argv[1:]``.
    prog : str, default="cmim pretrain"
        Program name shown in usage and error messages.

    Returns
    -------
    status : int
        0 once the model directory is written; 1 when training diverged (non-finite loss);
        2 after a user error (unreadable corpus, checkpoints in the way, a bad ``--vocab-from``).

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
    >>> from sklearn_cmim.pretrain import main
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
    >>> cmim = CMIMTransformer(pretrained=output, max_epochs=0).fit(["CCO"])
    >>> cmim.transform(["CCCO"]).shape
    (1, 40)
    >>> tmp.cleanup()
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.d_model % args.n_heads:
        parser.error(f"--d-model ({args.d_model}) must be a multiple of --n-heads ({args.n_heads})")
    if args.weights is not None and len(args.weights) != len(args.inputs):
        parser.error(f"--weights takes one weight per FILE: {len(args.inputs)} file(s), "
                     f"{len(args.weights)} weight(s)")
    if args.weights is not None and not any(args.weights):
        parser.error("--weights: at least one weight must be above 0")
    if args.init_from and args.vocab_from:
        parser.error("--init-from keeps that model's vocabulary (extended): drop --vocab-from")
    try:
        pretrain(args)
    except (CorpusError, CheckpointError) as error:
        return report_error(prog, error)
    except NonFiniteLossError as error:
        report_error(prog, f"training diverged ({error}); --resume from the last checkpoint "
                           "with a lower --learning-rate")
        return 1
    return 0


def pretrain(args: argparse.Namespace) -> Path:
    """Train as ``args`` say (see :func:`build_parser`); returns the model directory."""
    context = Context.from_environment()
    device = context.start(resolve_device(args.device))
    try:
        with ExitStack() as cleanup:
            return _pretrain(args, context, device, cleanup)
    finally:
        context.stop()


def _pretrain(args, context: Context, device: torch.device, cleanup: ExitStack) -> Path:
    def log(message: str) -> None:
        if context.is_main:
            print(message, flush=True)

    precision = resolve_precision(args.precision, device)
    corpora, split = [Corpus([path], args.column) for path in args.inputs], HoldOut(args.holdout_every)
    checkpoints = Checkpoints(args.output / "checkpoints", args.keep_checkpoints)
    state = resume_state(args, context, checkpoints)
    config, vocabulary, standardizer, initial = model_spec(args, context, corpora, split, state)
    settings = TrainSettings(batch_size=args.batch_size, learning_rate=args.learning_rate,
                             weight_decay=args.weight_decay, mim_warmup_steps=args.mim_warmup_steps,
                             contrastive_weight=args.contrastive_weight, temperature=args.temperature,
                             contrastive_positive=args.contrastive_positive)
    validation, peak = {}, None
    if context.is_main:  # before seeding: neither may move the random generators training uses
        encoder = MoleculeEncoder(standardizer, vocabulary, config.max_length)
        validation = {corpus.name: validation_set(corpus, split, encoder, args.validation_size)
                      for corpus in corpora}
        peak = matmul_peak_flops(device, torch.bfloat16 if precision == "bf16" else torch.float32,
                                 size=4096 if device.type == "cuda" else 1024, min_seconds=0.5)

    torch.manual_seed(args.random_state)  # identical initial weights on every rank
    model = CMIMModel(config)
    if initial is not None:
        load_extended(model, initial.model)
    model = model.to(device)
    optimizer = make_optimizer(model, settings)
    stream = training_stream(args, context, corpora, split,
                             MoleculeEncoder(standardizer, vocabulary, config.max_length))
    cleanup.callback(stream.close)
    run = Run(model, optimizer, make_scheduler(optimizer, args.max_steps, settings), stream, vocabulary,
              standardizer)
    torch.manual_seed(args.random_state + context.rank)  # distinct dropout and latent noise per rank
    if state is not None:
        run.restore(state, context.rank, device)
        log(f"resumed from {state['path']} at step {run.step}")
        del state  # the loaded copy of the weights and optimiser state is no longer needed
    if context.is_main:
        log(f"{model.num_parameters():,} parameters | vocabulary {len(vocabulary)} tokens | "
            f"{context.world_size} process(es) on {device.type} | {precision} | "
            f"matmul peak {peak / 1e12:.2f} TFLOP/s per device | "
            f"{sum(map(len, validation.values()))} validation molecules "
            f"(every {args.holdout_every}th record)")
        if initial is not None and state is None:
            log(f"initialised from {args.init_from} ({len(initial.vocabulary)} tokens, "
                f"max_length {initial.model.config.max_length})")
        if not any(validation.values()):
            log("warning: no usable held-out molecule; validation is skipped")

    ddp = (DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
           if context.distributed else model)
    gather = LatentGather(context) if context.distributed else None
    schedule = CheckpointSchedule(args.checkpoint_every_steps, args.checkpoint_every_minutes)
    meter = Meter()
    # On a GPU, bad steps are skipped on the device and looked for at each log line, so that no
    # step waits for the device to say whether its loss was finite.
    skipper, checked = StepSkipper.for_device(device), run.step
    batches = iter(stream)
    while run.step < args.max_steps:
        batch = next(batches)
        ids = pad(batch)
        if device.type == "cuda":
            ids = ids.pin_memory()
        try:
            losses = train_step(ddp, ids.to(device, non_blocking=True), optimizer, run.scheduler, run.step,
                                settings, autocast(device, precision), gather, skipper)
        except NonFiniteLossError as error:
            raise NonFiniteLossError(f"step {run.step + 1}: {error}") from None
        run.step += 1
        step, last = run.step, run.step == args.max_steps
        log_line = step % args.log_every == 0 or last
        if skipper is not None and log_line:
            if skipper.skipped():
                raise NonFiniteLossError(f"a step from {checked + 1} to {step} had a non-finite loss or "
                                         "gradient; it was skipped, so the weights are those of a good step")
            checked = step
        if context.is_main:
            meter.add(losses, batch, ids.shape[1])
            if log_line:
                # The gathered batch, as measured; without a gather the contrastive term used this batch.
                negatives = (gather.global_batch if gather and gather.global_batch else len(batch)) - 1
                record = {"step": step, "epoch": stream.epoch,
                          "molecules_seen": step * args.batch_size * context.world_size,
                          "lr": run.scheduler.get_last_lr()[0], "negatives": negatives,
                          **meter.read(model, peak, context.world_size)}
                run.history["training"].append(record)
                log(format_record(record, args.max_steps))
        paused = time.perf_counter()
        if any(validation.values()) and (step % args.validation_every == 0 or last):
            run.history["validation"].append(validate_corpora(
                model, validation, vocabulary, settings, step, device, precision,
                args.batch_size * context.world_size))
            log(format_validation(run.history["validation"][-1]))
        due = schedule.due_by_steps(step) or last
        if step % args.log_every == 0:  # rank 0's clock decides for all, at steps every rank knows
            due = context.broadcast(schedule.due_by_time()) or due
        if due:
            rank_states = context.all_gather(run.rank_state(device))
            if context.is_main:
                log(f"checkpoint {checkpoints.save(run.checkpoint(rank_states, args), step)}")
            schedule.saved()
        meter.start += time.perf_counter() - paused  # throughput counts training time only

    skipped = sum((Counter(counts) for counts in context.all_gather(dict(stream.skipped))), Counter())
    if context.is_main:
        pretraining = {"steps": run.step, "molecules_seen": run.step * args.batch_size * context.world_size,
                       "world_size": context.world_size, "skipped_molecules": dict(skipped),
                       "matmul_peak_flops": peak, "arguments": arguments(args)}
        if args.init_from:
            pretraining["initialised_from"] = initial_summary(args.init_from)
        metadata = {"contrastive_weight": args.contrastive_weight, "temperature": args.temperature,
                    "pretraining": pretraining, "learning_curve": run.history["validation"],
                    "training_log": run.history["training"]}
        save_pretrained(args.output, Pretrained(model, vocabulary, standardizer, metadata))
        log(f"saved the model to {args.output} (step {run.step}; skipped molecules: "
            f"{dict(skipped) or 'none'})")
    return args.output


@dataclass
class Run:
    """What a checkpoint must bring back: the trainable state, the position, the history."""

    model: CMIMModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stream: BatchStream | PreparedStream | MixedStream
    vocabulary: Vocabulary
    standardizer: Standardizer
    step: int = 0
    history: dict = field(default_factory=lambda: {"training": [], "validation": []})

    def rank_state(self, device: torch.device) -> dict:
        """This process's own part: random generator states and data position."""
        return {"rng": capture_rng(device), "data": self.stream.state_dict()}

    def checkpoint(self, rank_states: list[dict], args) -> dict:
        """The whole checkpoint, with every rank's part and what is needed to rebuild the model."""
        return {"step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ranks": rank_states, "world_size": len(rank_states),
                "config": self.model.config.to_dict(), "vocabulary": self.vocabulary.to_list(),
                "standardizer": self.standardizer.to_dict(), "history": self.history,
                "arguments": arguments(args)}

    def restore(self, state: dict, rank: int, device: torch.device) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["ranks"][rank]["rng"], device)
        self.stream.load_state_dict(state["ranks"][rank]["data"])
        self.step, self.history = state["step"], state["history"]


def training_stream(args, context: Context, corpora: list[Corpus], split: HoldOut,
                    encoder: MoleculeEncoder) -> BatchStream | PreparedStream | MixedStream:
    """This rank's batches: one stream per corpus, mixed by ``args.weights`` when there are several."""
    streams = [corpus_stream(args, context, corpus, split, copy.deepcopy(encoder), i, len(corpora))
               for i, corpus in enumerate(corpora)]
    if len(streams) == 1:
        return streams[0]
    return MixedStream(streams, args.weights or [1.0] * len(streams), args.random_state, context.rank)


def corpus_stream(args, context: Context, corpus: Corpus, split: HoldOut, encoder: MoleculeEncoder,
                  index: int, n_corpora: int) -> BatchStream | PreparedStream:
    """One corpus's batches: streamed from its file, or cut from its ``--prepared`` arrays, which
    rank 0 writes first when they do not exist yet. Each corpus draws its own order (seed + index)."""
    seed = args.random_state + index
    if args.prepared is None:
        return BatchStream(corpus, split, encoder, args.batch_size, seed, context.rank,
                           context.world_size, args.pool_batches, args.data_workers)
    path = prepared_path(args.prepared, index, n_corpora)
    if context.is_main and not path.exists():
        start = time.perf_counter()
        prepared = PreparedCorpus.build(corpus, split, encoder, args.data_workers)
        prepared.save(path)
        print(f"prepared {len(prepared):,} training molecules in {time.perf_counter() - start:.0f} s: "
              f"{path}", flush=True)
    context.broadcast(None)  # the other ranks wait here until the file exists
    prepared = PreparedCorpus.load(path, PreparedCorpus.settings_of(corpus, split, encoder))
    return PreparedStream(prepared, split, encoder, args.batch_size, seed, context.rank,
                          context.world_size, args.pool_batches)


def prepared_path(path: Path, index: int, n_corpora: int) -> Path:
    """``--prepared`` itself for one corpus; for several, one file each: ``mix.npz`` -> ``mix.0.npz``, ...

    >>> prepared_path(Path("mix.npz"), 1, 2).name
    'mix.1.npz'
    """
    return path if n_corpora == 1 else path.with_name(f"{path.stem}.{index}{path.suffix}")


def resume_state(args, context: Context, checkpoints: Checkpoints) -> dict | None:
    """The checkpoint to start from (``None``: a fresh run); rank 0 picks it, every rank reads it."""
    found = None
    if context.is_main:
        check_writable(args.output, checkpoints.directory)  # before any work, so a bad --output fails fast
        if not args.resume and checkpoints.paths():
            raise CheckpointError(f"{checkpoints.directory} already holds checkpoints: pass --resume to "
                                  "continue that run, or choose another --output")
        found = checkpoints.load_latest() if args.resume else None
        if args.resume and found is None:
            print(f"no checkpoint in {checkpoints.directory}: starting a new run", flush=True)
    path = context.broadcast(None if found is None else str(found[0]))
    if path is None:
        return None
    state = found[1] if context.is_main else load_checkpoint(path)
    if state["world_size"] != context.world_size:
        raise CheckpointError(f"{path} was written by {state['world_size']} process(es); resume it with "
                              f"as many (now {context.world_size}) so that each rank finds its data position")
    return {**state, "path": path}


def model_spec(args, context: Context, corpora: list[Corpus], split: HoldOut, state: dict | None):
    """Model config, vocabulary, standardiser and the model to start from (``None``: fresh weights):
    the checkpoint's when resuming, else from ``args``."""
    if state is not None:
        return (ModelConfig.from_dict(state["config"]), Vocabulary(state["vocabulary"]),
                Standardizer(**state["standardizer"]), None)
    initial = load_model_option("--init-from", args.init_from) if args.init_from else None
    standardizer = (initial.standardizer if initial is not None
                    else Standardizer(args.largest_fragment, args.neutralize, args.isomeric))
    # Rank 0 reads the corpora once; the others receive the result.
    vocabulary = Vocabulary(context.broadcast(
        make_vocabulary(args, corpora, split, standardizer).to_list() if context.is_main else None))
    if initial is None:
        config = ModelConfig(vocab_size=len(vocabulary), dropout=args.dropout, bias=args.bias,
                             **{name: getattr(args, name) for name in MODEL_HELP})
        return config, vocabulary, standardizer, None
    vocabulary = initial.vocabulary.extended(vocabulary)
    base = initial.model.config
    config = dataclasses.replace(base, vocab_size=len(vocabulary), dropout=args.dropout,
                                 max_length=max(base.max_length, args.max_length))
    return config, vocabulary, standardizer, initial


def load_extended(model: CMIMModel, initial: CMIMModel) -> None:
    """Copy ``initial``'s weights into ``model``, whose token and position tables may be longer: the
    rows ``initial`` has are copied, the new ones keep their fresh initialisation."""
    weights = model.state_dict()
    for name, value in initial.state_dict().items():
        weights[name][:value.shape[0]] = value
    model.load_state_dict(weights)


def make_vocabulary(args, corpora: list[Corpus], split: HoldOut, standardizer: Standardizer) -> Vocabulary:
    if args.vocab_from is None:
        return build_vocabulary(corpora, split, standardizer, args.vocab_records, args.vocab_min_count)
    return load_model_option("--vocab-from", args.vocab_from).vocabulary


def load_model_option(option: str, name: str) -> Pretrained:
    try:
        return load_pretrained(name)
    except (FileNotFoundError, ValueError) as error:
        raise CorpusError(f"{option}: {error}") from None


def initial_summary(name: str) -> dict:
    """What the model a run started from was: its name and its own pretraining's size."""
    pretraining = load_pretrained(name).metadata.get("pretraining", {})
    return {"model": str(name), **{key: pretraining[key] for key in ("steps", "molecules_seen")
                                    if key in pretraining}}


def arguments(args) -> dict:
    """The command's arguments as plain values (stored in checkpoints and the model metadata)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


if __name__ == "__main__":
    sys.exit(main())
