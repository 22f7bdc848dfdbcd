"""The pretraining loop behind ``cmim pretrain`` (:mod:`sklearn_cmim.cli.pretrain`), on one device or under
``torchrun``.

One training loop serves both: under ``torchrun`` each rank trains on its share of the records
inside DistributedDataParallel and draws contrastive negatives from the global batch; rank 0
alone logs, validates and writes. The result is a model directory for
``CMIMTransformer(pretrained=...)``, with the checkpoints in its ``checkpoints/`` folder.

Read top-down: :func:`pretrain` (set-up), :class:`Loop` (a step, then the log line, validation
and checkpoint due after it), :class:`Run` (what a checkpoint holds), then the helpers they
call. What the run starts from (config, vocabulary, ``--init-from`` weights) lives in
:mod:`sklearn_cmim.training.model_spec`, the learning-rate schedule and its clock in
:mod:`sklearn_cmim.training.schedule`, what the loop reports (log lines, throughput,
validation) in :mod:`sklearn_cmim.training.reporting`, and how a stop signal ends it after a
checkpoint in :mod:`sklearn_cmim.training.stopping`.
"""

from __future__ import annotations

import argparse
import copy
import signal
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..chem.batching import pad
from ..chem.corpus import Corpus, CorpusError, HoldOut, MoleculeEncoder, standardised_set, validation_sets
from ..chem.standardize import Standardizer
from ..chem.tokenizer import Vocabulary
from ..config import ARCHITECTURE
from ..nn.device import HeapTrimmer, autocast, resolve_device, resolve_precision
from ..nn.flops import matmul_peak_flops
from ..nn.inference import fit_latent_prior
from ..nn.model import CMIMModel, ModelConfig
from ..nn.sampling import LatentPrior
from ..persistence import Pretrained, save_pretrained
from .checkpoint import (
    Checkpoints,
    CheckpointSchedule,
    capture_rng,
    changed_settings,
    input_files,
    restore_rng,
    resume_state,
)
from .distributed import Context, LatentGather
from .fit import NonFiniteLossError, StepSkipper, TrainSettings, make_optimizer, train_step
from .model_spec import initial_summary, load_extended, model_spec
from .prepared import PreparedCorpus, PreparedStream, prepare, prepared_path
from .reporting import Meter, format_record, format_validation, validate_corpora
from .schedule import TrainingClock, make_scheduler
from .stopping import StopRequest, raise_for
from .streams import BatchStream, MixedStream

__all__ = ["Loop", "Run", "pretrain", "train_settings"]


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
    precision = resolve_precision(args.precision, device)
    corpora, split = [Corpus([path], args.column) for path in args.inputs], HoldOut(args.holdout_every)
    if args.column is not None and all(corpus.columns[0] is None for corpus in corpora):  # none a CSV
        raise CorpusError(f"--column names a CSV column, and no input file is a .csv: drop --column "
                          f"{args.column}")
    checkpoints = Checkpoints(args.output / "checkpoints", args.keep_checkpoints)
    state = resume_state(args, context, checkpoints)
    config, vocabulary, standardizer, initial = model_spec(args, context, corpora, split, state)
    args = as_trained(args, config, standardizer)
    settings = train_settings(args)
    exclude = standardised_set(map(Path, args.exclude), standardizer)
    # A new encoder for each use, as it counts the molecules it skips.
    encoder = partial(MoleculeEncoder, standardizer, vocabulary, config.max_length, exclude)
    # Rank 0 alone validates and logs speeds; before seeding, as neither may move the random
    # generators that training uses.
    measured = context.on_main(share=False, compute=lambda: (
        validation_sets(corpora, split, encoder(), args.validation_size), device_peak(device, precision)))
    validation, peak = measured if context.is_main else ({}, None)

    torch.manual_seed(args.random_state)  # identical initial weights on every rank
    model = CMIMModel(config)
    if initial is not None:
        load_extended(model, initial.model)
    model = model.to(device)
    stream = training_stream(args, context, corpora, split, encoder())
    cleanup.callback(stream.close)
    run = Run.new(args, model, settings, stream, vocabulary, standardizer)
    if initial is not None:
        run.initialised_from = initial_summary(args.init_from, initial)
    torch.manual_seed(args.random_state + context.rank)  # distinct dropout and latent noise per rank
    loop = Loop(args, context, device, precision, settings, run, checkpoints, validation, peak)
    if state is not None:
        run.restore(state, context.rank, device)
        loop.log(f"resumed from {state['path']} at step {run.step}{changed_settings(state, args)}")
        del state  # the loaded copy of the weights and optimiser state is no longer needed
    loop.log_start(initial)  # None when resuming: the checkpoint holds the weights
    loop.train()
    loop.finish()
    return args.output


class Loop:
    """The training loop of one process: a step, then whatever is due after it (a log line, a
    validation, a checkpoint), until ``args.max_steps`` or, with ``args.max_minutes``, until the
    run's clock has run that long; rank 0 alone logs, validates and writes."""

    def __init__(self, args, context: Context, device: torch.device, precision: str,
                 settings: TrainSettings, run: Run, checkpoints: Checkpoints, validation: dict,
                 peak: float | None):
        self.args, self.context, self.device, self.precision = args, context, device, precision
        self.settings, self.run, self.checkpoints = settings, run, checkpoints
        self.validation, self.peak = validation, peak
        self.ddp = (DistributedDataParallel(run.model, device_ids=[device.index] if device.type == "cuda"
                                            else None) if context.distributed else run.model)
        self.gather = LatentGather(context) if context.distributed else None
        self.schedule = CheckpointSchedule(args.checkpoint_every_steps, args.checkpoint_every_minutes)
        self.meter = Meter()
        # On a GPU, bad steps are skipped on the device and looked for at each log line, so that no
        # step waits for the device to say whether its loss was finite.
        self.skipper, self.checked = StepSkipper.for_device(device), run.step

    def log(self, message: str) -> None:
        if self.context.is_main:
            print(message, flush=True)

    def log_start(self, initial: Pretrained | None) -> None:
        """The run's first lines: its size and set-up, and the model it starts from, if any."""
        args, context, run = self.args, self.context, self.run
        if not context.is_main:
            return
        self.log(f"{run.model.num_parameters():,} parameters | vocabulary {len(run.vocabulary)} tokens | "
                 f"{context.world_size} process(es) on {self.device.type} | {self.precision} | "
                 f"matmul peak {self.peak / 1e12:.2f} TFLOP/s per device | "
                 f"{sum(map(len, self.validation.values()))} validation molecules "
                 f"(every {args.holdout_every}th record)")
        if initial is not None:
            self.log(f"initialised from {args.init_from} ({len(initial.vocabulary)} tokens, "
                     f"max_length {initial.model.config.max_length})")
        if not any(self.validation.values()):
            self.log("warning: no usable held-out molecule; validation is skipped")

    def train(self) -> None:
        """Step until the run ends; a stop signal (see :mod:`~sklearn_cmim.training.stopping`)
        ends it after a checkpoint, raising as the signal would."""
        batches, clock, stop = iter(self.run.stream), self.run.clock, StopRequest(self.context)
        trim = HeapTrimmer(self.device)
        clock.start()
        with stop.watching():
            while self.run.step < self.args.max_steps and not clock.expired():
                batch = next(batches)
                losses, width = self.step(batch)
                trim()
                self.tick()
                signum = stop.agreed()
                last = self.run.step == self.args.max_steps or clock.expired() or signum is not None
                self.report(losses, batch, width, last)
                paused = time.perf_counter()
                if signum is None:
                    self.validate(last)
                self.save_if_due(last)
                self.meter.start += time.perf_counter() - paused  # throughput counts training time only
                if signum is not None:
                    self.log(f"stopped by {signal.Signals(signum).name} after step {self.run.step}; "
                             "--resume continues from the checkpoint above")
                    raise_for(signum)
        # A signal that came as the last checkpoint was written ends the run as asked; under
        # torchrun the ranks go on to write the model together, as they cannot agree any more.
        if stop.signum is not None and not self.context.distributed:
            raise_for(stop.signum)

    def tick(self) -> None:
        """Read the clock that the schedule and ``--max-minutes`` go by: after every step in one
        process; under ``torchrun``, with a budget, rank 0's at log steps, so that every rank
        uses the same learning rate and stops at the same step."""
        if not self.context.distributed:
            self.run.clock.tick()
        elif self.run.clock.budget is not None and self.run.step % self.args.log_every == 0:
            self.run.clock.elapsed = self.context.broadcast(self.run.clock.tick())

    def step(self, batch) -> tuple[dict, int]:
        """One optimiser step on ``batch``; returns its losses (on the device) and padded width."""
        ids = pad(batch)
        if self.device.type == "cuda":
            ids = ids.pin_memory()
        run, device = self.run, self.device
        try:
            losses = train_step(self.ddp, ids.to(device, non_blocking=True), run.optimizer, run.scheduler,
                                run.step, self.settings, autocast(device, self.precision), self.gather,
                                self.skipper)
        except NonFiniteLossError as error:
            raise NonFiniteLossError(f"step {run.step + 1}: {error}") from None
        run.step += 1
        return losses, ids.shape[1]

    def report(self, losses: dict, batch, width: int, last: bool) -> None:
        """Count the step; at a log line, check for skipped steps and log the losses and speed."""
        args, run, step = self.args, self.run, self.run.step
        log_line = step % args.log_every == 0 or last
        if self.skipper is not None and log_line:
            if self.skipper.skipped():
                raise NonFiniteLossError(f"a step from {self.checked + 1} to {step} had a non-finite loss or "
                                         "gradient; it was skipped, so the weights are those of a good step")
            self.checked = step
        if not self.context.is_main:
            return
        self.meter.add(losses, batch, width)
        if log_line:
            # The gathered batch, as measured; without a gather the contrastive term used this batch.
            gather = self.gather
            negatives = (gather.global_batch if gather and gather.global_batch else len(batch)) - 1
            record = {"step": step, "epoch": run.stream.epoch,
                      "molecules_seen": step * args.batch_size * self.context.world_size,
                      "lr": run.scheduler.get_last_lr()[0], "negatives": negatives,
                      **self.meter.read(run.model, self.peak, self.context.world_size)}
            if args.max_minutes is not None:
                record["minutes"] = run.clock.elapsed / 60
            run.history["training"].append(record)
            self.log(format_record(record, args.max_steps, args.max_minutes))

    def validate(self, last: bool) -> None:
        step = self.run.step
        if any(self.validation.values()) and (step % self.args.validation_every == 0 or last):
            record = validate_corpora(self.run.model, self.validation, self.run.vocabulary, self.settings,
                                      step, self.device, self.precision,
                                      self.args.batch_size * self.context.world_size)
            self.run.history["validation"].append(record)
            self.log(format_validation(record))

    def save_if_due(self, last: bool) -> None:
        step, context = self.run.step, self.context
        due = self.schedule.due_by_steps(step) or last
        if step % self.args.log_every == 0:  # rank 0's clock decides for all, at steps every rank knows
            due = context.broadcast(self.schedule.due_by_time()) or due
        if due:
            rank_states = context.all_gather(self.run.rank_state(self.device))
            path = context.on_main(lambda: self.checkpoints.save(self.run.checkpoint(rank_states, self.args),
                                                                 step), share=False)
            self.log(f"checkpoint {path}")  # rank 0's path: the others log nothing
            self.schedule.saved()

    def finish(self) -> None:
        """Write the model directory, with what the run measured in its metadata."""
        args, context, run = self.args, self.context, self.run
        skipped = sum((Counter(counts) for counts in context.all_gather(dict(run.stream.skipped))), Counter())
        if not context.is_main:
            return
        pretraining = {"steps": run.step, "molecules_seen": run.step * args.batch_size * context.world_size,
                       "world_size": context.world_size, "skipped_molecules": dict(skipped),
                       "matmul_peak_flops": self.peak, "arguments": arguments(args)}
        if run.initialised_from is not None:
            pretraining["initialised_from"] = run.initialised_from
        metadata = {"contrastive_weight": args.contrastive_weight, "temperature": args.temperature,
                    "pretraining": pretraining, "learning_curve": run.history["validation"],
                    "training_log": run.history["training"]}
        prior = held_out_prior(run.model, self.validation, args.batch_size, self.device)
        save_pretrained(args.output, Pretrained(run.model, run.vocabulary, run.standardizer, metadata, prior))
        self.log(f"saved the model to {args.output} (step {run.step}; skipped molecules: "
                 f"{dict(skipped) or 'none'})")


@dataclass
class Run:
    """What a checkpoint must bring back: the trainable state, the position, the time trained, the
    history."""

    model: CMIMModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stream: BatchStream | PreparedStream | MixedStream
    vocabulary: Vocabulary
    standardizer: Standardizer
    clock: TrainingClock
    step: int = 0
    history: dict = field(default_factory=lambda: {"training": [], "validation": []})
    initialised_from: dict | None = None  # the --init-from model, summed up when the run started

    @classmethod
    def new(cls, args, model: CMIMModel, settings: TrainSettings, stream, vocabulary: Vocabulary,
            standardizer: Standardizer) -> Run:
        """A run at step 0: AdamW, with its schedule over ``args.max_steps`` and ``args.max_minutes``."""
        optimizer = make_optimizer(model, settings)
        clock = TrainingClock(None if args.max_minutes is None else 60 * args.max_minutes)
        scheduler = make_scheduler(optimizer, args.max_steps, settings, args.warmup_steps, clock)
        return cls(model, optimizer, scheduler, stream, vocabulary, standardizer, clock)

    def rank_state(self, device: torch.device) -> dict:
        """This process's own part: random generator states and data position."""
        return {"rng": capture_rng(device), "data": self.stream.state_dict()}

    def checkpoint(self, rank_states: list[dict], args) -> dict:
        """The whole checkpoint, with every rank's part and what is needed to rebuild the model."""
        return {"step": self.step, "training_seconds": self.clock.read(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ranks": rank_states, "world_size": len(rank_states),
                "config": self.model.config.to_dict(), "vocabulary": self.vocabulary.to_list(),
                "standardizer": self.standardizer.to_dict(), "history": self.history,
                "arguments": arguments(args), "input_files": input_files(args.inputs),
                "initialised_from": self.initialised_from}

    def restore(self, state: dict, rank: int, device: torch.device) -> None:
        """Continue where ``state`` stopped, at this command's learning rate and weight decay: a run
        resumed after diverging must train at the lower rate it was given."""
        chosen = [{key: group[key] for key in ("initial_lr", "weight_decay")}
                  for group in self.optimizer.param_groups]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for group, options in zip(self.optimizer.param_groups, chosen, strict=True):
            group["lr"] *= options["initial_lr"] / group["initial_lr"]  # same point of the schedule
            group.update(options)
        self.scheduler.base_lrs = [options["initial_lr"] for options in chosen]
        self.initialised_from = state.get("initialised_from")
        restore_rng(state["ranks"][rank]["rng"], device)
        self.stream.load_state_dict(state["ranks"][rank]["data"])
        self.step, self.history = state["step"], state["history"]
        # Checkpoints written before the clock existed hold no seconds.
        self.clock.spent = self.clock.elapsed = state.get("training_seconds", 0.0)


def held_out_prior(model: CMIMModel, validation: dict[str, list], batch_size: int,
                   device: torch.device) -> LatentPrior | None:
    """The latent prior ``sample`` draws from, fitted to the run's validation molecules: they stand
    for the corpora, and every rank's run (and ``cmim export``) finds the same ones."""
    held_out = [ids for molecules in validation.values() for ids, _ in molecules]
    return fit_latent_prior(model, held_out, batch_size, device, "fp32", np.random.default_rng(0))


def train_settings(args) -> TrainSettings:
    """The optimisation and loss settings that ``args`` give."""
    return TrainSettings(batch_size=args.batch_size, learning_rate=args.learning_rate,
                         weight_decay=args.weight_decay, mim_warmup_steps=args.mim_warmup_steps,
                         contrastive_weight=args.contrastive_weight, temperature=args.temperature,
                         contrastive_positive=args.contrastive_positive)


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
    # The other ranks wait here until the file exists.
    context.on_main(lambda: prepare(corpus, split, encoder, args.data_workers, path), share=False)
    prepared = PreparedCorpus.load(path, PreparedCorpus.settings_of(corpus, split, encoder))
    return PreparedStream(prepared, split, encoder, args.batch_size, seed, context.rank,
                          context.world_size, args.pool_batches)


def device_peak(device: torch.device, precision: str) -> float:
    """The matmul FLOP/s that MFU is measured against, at the precision training runs in."""
    return matmul_peak_flops(device, torch.bfloat16 if precision == "bf16" else torch.float32,
                             size=4096 if device.type == "cuda" else 1024, min_seconds=0.5)


def as_trained(args, config: ModelConfig, standardizer: Standardizer) -> argparse.Namespace:
    """``args`` with the architecture and standardiser the run really trains: under ``--init-from``
    or ``--resume`` they come from the model or checkpoint, not the options, and the checkpoints,
    metadata and model cards must say what was trained."""
    trained = {name: getattr(config, name) for name in (*ARCHITECTURE, "dropout", "bias")}
    return argparse.Namespace(**{**vars(args), **trained, **standardizer.to_dict()})


def arguments(args) -> dict:
    """The command's arguments as plain values (stored in checkpoints and the model metadata)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}

