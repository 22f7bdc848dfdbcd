"""Training checkpoints: written atomically, read without unpickling code, newest readable wins;
and the checks a ``--resume`` makes before it continues a run (:func:`resume_state`).

A checkpoint is one ``step-XXXXXXXX.pt`` file holding plain tensors and Python containers only
(model, optimiser and scheduler state, step, model config, vocabulary, standardiser settings,
and per rank the random generator states and data position), so ``torch.load(weights_only=True)``
reads it. A write goes to a temporary file in the same directory, is fsynced and then renamed
over the final name, so a crash or a full disk mid-write never damages an existing checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import torch

from ..chem.smiles_files import current_umask
from ..persistence import CONFIG_FILE, load_error_reason
from .distributed import Context

__all__ = ["CheckpointError", "CheckpointSchedule", "CheckpointWarning", "Checkpoints", "DamagedCheckpoint",
           "capture_rng", "changed_data_options", "changed_settings", "check_writable", "found_again",
           "input_files", "load_checkpoint", "restore_rng", "resume_state", "run_corpora"]

NAME = re.compile(r"^step-(\d{8})\.pt$")
REQUIRED = ("step", "model", "optimizer", "scheduler", "ranks", "config", "vocabulary", "standardizer")


class CheckpointError(OSError):
    """Checkpoints cannot be written, or none of them can be read."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint file's contents cannot be read: truncated, corrupt, foreign or unsafe. A file
    that cannot be opened raises a plain :class:`CheckpointError`: the disk may be the trouble."""


class CheckpointWarning(UserWarning):
    """A checkpoint was unreadable and an older one is used instead."""


class Checkpoints:
    """The checkpoint files of one run, in ``directory``; the newest ``keep`` are kept."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self.directory = Path(directory)
        self.keep = keep

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if NAME.match(p.name))

    def save(self, state: dict, step: int) -> Path:
        """Write ``step-XXXXXXXX.pt`` atomically, then delete all but the newest ``keep``."""
        path = self.directory / f"step-{step:08d}.pt"
        temporary = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)  # with the first checkpoint, not before
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".step-", suffix=".tmp",
                                             delete=False) as handle:
                temporary = Path(handle.name)
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.chmod(0o666 & ~current_umask())  # temporary files are private; checkpoints need not be
            os.replace(temporary, path)
        except BaseException as error:
            if temporary is not None:
                temporary.unlink(missing_ok=True)
            if isinstance(error, Exception):  # a full disk surfaces as OSError or torch's RuntimeError
                reason = error.strerror if isinstance(error, OSError) and error.strerror else error
                raise CheckpointError(f"could not write checkpoint {path} ({reason}); "
                                      "the earlier checkpoints are untouched") from None
            raise
        self._sync_directory()  # makes the rename itself survive a power cut
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load_latest(self) -> tuple[Path, dict] | None:
        """The newest readable checkpoint, or ``None`` if there is none at all.

        A damaged one (truncated by a crash, corrupted on disk) is renamed ``*.corrupt``, so that it
        is neither retried nor counted among the kept ones, and the previous one is tried. A file
        that cannot be opened stops the search instead: a passing disk error must not cost a good
        checkpoint. Temporary files of interrupted writes are removed.
        """
        for partial in self.directory.glob(".step-*.tmp"):  # left by a run killed while writing
            partial.unlink()
        paths = self.paths()
        for index in range(len(paths) - 1, -1, -1):
            path = paths[index]
            try:
                return path, load_checkpoint(path)
            except DamagedCheckpoint as error:
                fallback = f"falling back to {paths[index - 1].name}" if index else "no older one left"
                path.rename(path.with_name(path.name + ".corrupt"))
                warnings.warn(f"{error}; renamed it to {path.name}.corrupt, {fallback}",
                              CheckpointWarning, stacklevel=2)
        if paths:
            raise CheckpointError(f"none of the checkpoints in {self.directory} is readable")
        return None

    def damaged(self) -> list[Path]:
        """Checkpoints found damaged earlier (renamed ``*.corrupt``)."""
        return sorted(self.directory.glob("step-*.pt.corrupt")) if self.directory.is_dir() else []


def resume_state(args, context: Context, checkpoints: Checkpoints) -> dict | None:
    """The checkpoint to start from (``None``: a fresh run); rank 0 picks it, every rank reads it."""
    found = context.on_main(lambda: newest_to_resume(args, checkpoints), share=False)
    path = context.broadcast(None if found is None else str(found[0]))
    if path is None:
        return None
    state = found[1] if context.is_main else load_checkpoint(path)
    if state["world_size"] != context.world_size:
        raise CheckpointError(f"{path} was written by {state['world_size']} process(es); resume it with "
                              f"as many (now {context.world_size}) so that each rank finds its data position")
    if changed := changed_data_options(state.get("arguments", {}), args, state.get("input_files", [])):
        raise CheckpointError(f"{path} was written by a run with other data options ({'; '.join(changed)}); "
                              "resume it with the same ones")
    return {**state, "path": path}


def newest_to_resume(args, checkpoints: Checkpoints):
    """Rank 0's part of :func:`resume_state`: the newest readable checkpoint, as ``(path, state)``,
    when resuming; ``None`` for a new run, where nothing in the way of one may be lost."""
    check_writable(args.output, checkpoints.directory)  # before any work, so a bad --output fails fast
    if not args.resume and checkpoints.paths():
        # --overwrite replaces a finished model, not the checkpoints that could extend its run.
        also = " (--overwrite replaces the model, never its run's checkpoints)" if args.overwrite else ""
        raise CheckpointError(f"{checkpoints.directory} already holds checkpoints{also}: pass --resume "
                              "to continue that run, move them away to start a new one there, or "
                              "choose another --output")
    found = checkpoints.load_latest() if args.resume else None
    if args.resume and found is None:
        refuse_new_run(args, checkpoints)
        print(f"no checkpoint in {checkpoints.directory}: starting a new run", flush=True)
    return found


def changed_settings(state: dict, args) -> str:
    """What of the optimisation and the corpora's mix the resumed run changes, for its log line: a
    resume without the run's --weights draws the corpora equally, and another --max-steps moves
    the learning rate to that point of the new schedule."""
    before = state.get("arguments", {})
    changed = [f"{name.replace('_', ' ')} {shown(before[name])}, now {shown(getattr(args, name))}"
               for name in ("learning_rate", "weight_decay", "max_steps", "weights")
               if name in before and before[name] != getattr(args, name)]
    return f" ({'; '.join(changed)})" if changed else ""


def shown(value) -> str:
    """An option's value as the log line writes it; ``None`` (no --weights) is an equal mix."""
    if value is None:
        return "equal"
    return " ".join(f"{w:g}" for w in value) if isinstance(value, list) else f"{value:g}"


def refuse_new_run(args, checkpoints: Checkpoints) -> None:
    """``--resume`` found nothing to resume: starting afresh must not replace a finished model, nor
    bury the checkpoints found damaged earlier (they may only have met a passing disk error)."""
    if damaged := checkpoints.damaged():
        raise CheckpointError(f"{checkpoints.directory} holds only damaged checkpoints ({damaged[-1].name} "
                              "and older): move them away to start a new run there")
    if (args.output / CONFIG_FILE).exists() and not args.overwrite:
        raise CheckpointError(f"{args.output} holds a model and no checkpoint to resume: pass --overwrite "
                              "to train a new one in its place, or choose another --output")


def check_writable(*directories: Path) -> None:
    """Fail now, with the reason, if files could not be written in the directories.

    Creates none of them (a missing one is tried in its nearest existing parent): a run that fails
    before its first checkpoint leaves no empty folder behind.
    """
    for directory in directories:
        existing = next(path for path in (directory, *directory.parents) if path.exists())
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            raise CheckpointError(f"cannot write to {directory}: {error.strerror or error}") from None


def changed_data_options(before: dict, args, files: list[dict] = ()) -> list[str]:
    """What a resumed run reads differently: which records are held out, and from which files (by
    name and, where ``files`` (:func:`input_files`) recorded it, size), would make it train on
    held-out records or take up another file's position; another batch or pool size would cut the
    pool it resumes in differently and miscount the molecules seen."""
    changed = [f"--{name.replace('_', '-')} {before[name]!r}, now {getattr(args, name)!r}"
               for name in ("holdout_every", "column", "batch_size", "pool_batches")
               if name in before and before[name] != getattr(args, name)]
    # Caught here, before a --prepared corpus is prepared for a run that cannot use it.
    if "prepared" in before and (before["prepared"] is None) != (args.prepared is None):
        changed.append("a prepared corpus (--prepared), now streamed files" if before["prepared"] is not None
                       else "streamed files, now a prepared corpus (--prepared)")
    excluded, now = ([Path(p).name for p in paths] for paths in (before.get("exclude", []), args.exclude))
    if excluded != now:
        changed.append(f"--exclude {' '.join(excluded) or 'nothing'}, now {' '.join(now) or 'nothing'}")
    names = [Path(path).name for path in before.get("inputs", [])]
    if names and names != [Path(path).name for path in args.inputs]:
        changed.append(f"input files {', '.join(names)}, now {', '.join(Path(p).name for p in args.inputs)}")
    elif len(files) == len(args.inputs):  # a line added or removed numbers the records after it anew
        for file, path in zip(files, map(Path, args.inputs), strict=True):
            if "bytes" in file and path.is_file() and (size := path.stat().st_size) != file["bytes"]:
                changed.append(f"corpus {path.name} of {file['bytes']:,} bytes, now {size:,}")
    return changed


def input_files(paths) -> list[dict]:
    """Each corpus a run reads, as an absolute path and a size: what ``cmim export`` needs to find
    the same files again, from whatever directory it runs in. A run that reads its corpora already
    tokenised (the bundled models' GPU recipe) may name files that are not here: those get no size."""
    files = []
    for path in map(Path, paths):
        files.append({"path": str(path.resolve())})
        if path.is_file():
            files[-1]["bytes"] = path.stat().st_size
    return files


def run_corpora(state: dict) -> tuple[list[Path], str | None]:
    """The corpora a checkpoint's run read, found again; or none and the reason.

    Checkpoints from before :func:`input_files` hold only the paths as given, relative to a
    directory they do not record: those are tried from the current one.
    """
    files = state.get("input_files") or [{"path": p} for p in state.get("arguments", {}).get("inputs", [])]
    if not files:
        return [], "the checkpoint names no corpus"
    return found_again(files, "corpus")


def found_again(files: list[dict], what: str) -> tuple[list[Path], str | None]:
    """The paths of ``files`` (as :func:`input_files` records them), if each is still there and,
    where its size was recorded, unchanged; or none and the reason, naming the file as ``what``."""
    for file in files:
        path = Path(file["path"])
        if not path.is_file():
            return [], f"the run's {what} {path} is not there any more"
        if "bytes" in file and path.stat().st_size != file["bytes"]:
            return [], f"the run's {what} {path} has changed since (its size differs)"
    return [Path(file["path"]) for file in files], None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read one checkpoint safely; any damage becomes a :class:`CheckpointError` naming the file."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    if not start.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip, or before 1.6 a pickle
        why = "the file is empty" if not start else "it is not a PyTorch checkpoint"
        raise DamagedCheckpoint(f"checkpoint {path} is unreadable: {why}")
    if start.startswith(b"PK"):
        check_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:  # the disk failed, not necessarily the file
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise DamagedCheckpoint(f"checkpoint {path} is unreadable (truncated, corrupt or unsafe: "
                              f"{load_error_reason(error)})") from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise DamagedCheckpoint(f"checkpoint {path} is unreadable (missing {', '.join(missing)})")
    return state


def check_archive(path) -> None:
    """A zip checkpoint must end in its directory: torch reads a file cut short (a partial copy)
    as an OSError, ``Invalid argument``, which would pass for a disk error and stop a resume."""
    try:
        zipfile.ZipFile(path).close()
    except zipfile.BadZipFile:
        raise DamagedCheckpoint(f"checkpoint {path} is unreadable: it is truncated (its zip directory "
                                "is missing)") from None
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror or error}") from None


class CheckpointSchedule:
    """Every ``every_steps`` steps or every ``every_minutes`` minutes, whichever comes first."""

    def __init__(self, every_steps: int, every_minutes: float):
        self.every_steps = every_steps
        self.every_seconds = 60.0 * every_minutes
        self.last = time.monotonic()

    def due_by_steps(self, step: int) -> bool:
        return step % self.every_steps == 0

    def due_by_time(self) -> bool:
        return time.monotonic() - self.last >= self.every_seconds

    def saved(self) -> None:
        self.last = time.monotonic()


def capture_rng(device: torch.device) -> dict:
    """This process's torch (CPU and CUDA) and Python random generator states."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "python": random.getstate()}


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    random.setstate(state["python"])
