"""Training checkpoints: written atomically, read without unpickling code, newest readable wins.

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
from pathlib import Path

import torch

from ..chem.smiles_files import current_umask
from ..persistence import load_error_reason

__all__ = ["CheckpointError", "CheckpointSchedule", "CheckpointWarning", "Checkpoints",
           "capture_rng", "changed_data_options", "check_writable", "input_files", "load_checkpoint",
           "restore_rng", "run_corpora"]

NAME = re.compile(r"^step-(\d{8})\.pt$")
REQUIRED = ("step", "model", "optimizer", "scheduler", "ranks", "config", "vocabulary", "standardizer")


class CheckpointError(OSError):
    """Checkpoints cannot be written, or none of them can be read."""


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

        An unreadable one (truncated by a crash, corrupted on disk) is renamed ``*.corrupt``, so
        that it is neither retried nor counted among the kept ones, and the previous one is tried.
        Temporary files of interrupted writes are removed.
        """
        for partial in self.directory.glob(".step-*.tmp"):  # left by a run killed while writing
            partial.unlink()
        paths = self.paths()
        for index in range(len(paths) - 1, -1, -1):
            path = paths[index]
            try:
                return path, load_checkpoint(path)
            except CheckpointError as error:
                fallback = f"falling back to {paths[index - 1].name}" if index else "no older one left"
                path.rename(path.with_name(path.name + ".corrupt"))
                warnings.warn(f"{error}; renamed it to {path.name}.corrupt, {fallback}",
                              CheckpointWarning, stacklevel=2)
        if paths:
            raise CheckpointError(f"none of the checkpoints in {self.directory} is readable")
        return None


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


def changed_data_options(before: dict, args) -> list[str]:
    """What a resumed run reads differently: which records are held out, and from which files (by
    name), would make it train on held-out records or take up another file's position."""
    changed = [f"--{name.replace('_', '-')} {before[name]!r}, now {getattr(args, name)!r}"
               for name in ("holdout_every", "column")
               if name in before and before[name] != getattr(args, name)]
    # Caught here, before a --prepared corpus is prepared for a run that cannot use it.
    if "prepared" in before and (before["prepared"] is None) != (args.prepared is None):
        changed.append("a prepared corpus (--prepared), now streamed files" if before["prepared"] is not None
                       else "streamed files, now a prepared corpus (--prepared)")
    files = [Path(path).name for path in before.get("inputs", [])]
    if files and files != [Path(path).name for path in args.inputs]:
        changed.append(f"input files {', '.join(files)}, now {', '.join(Path(p).name for p in args.inputs)}")
    return changed


def input_files(paths) -> list[dict]:
    """Each corpus a run reads, as an absolute path and a size: what ``cmim export`` needs to find
    the same files again, from whatever directory it runs in."""
    return [{"path": str(Path(path).resolve()), "bytes": Path(path).stat().st_size} for path in paths]


def run_corpora(state: dict) -> tuple[list[Path], str | None]:
    """The corpora a checkpoint's run read, found again; or none and the reason.

    Checkpoints from before :func:`input_files` hold only the paths as given, relative to a
    directory they do not record: those are tried from the current one.
    """
    files = state.get("input_files") or [{"path": p} for p in state.get("arguments", {}).get("inputs", [])]
    if not files:
        return [], "the checkpoint names no corpus"
    for file in files:
        path = Path(file["path"])
        if not path.is_file():
            return [], f"the run's corpus {path} is not there any more"
        if "bytes" in file and path.stat().st_size != file["bytes"]:
            return [], f"the run's corpus {path} has changed since (its size differs)"
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
        raise CheckpointError(f"checkpoint {path} is unreadable: {why}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, corrupt or unsafe: "
                              f"{load_error_reason(error)})") from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is unreadable (missing {', '.join(missing)})")
    return state


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
