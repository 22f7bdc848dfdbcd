"""What every ``cmim`` command shares: its argument parser, option types and common options, and
how it reports.

A user error is one line on stderr (``PROG: error: ...``) and exit status 2, never a traceback;
under ``torchrun`` every line names its rank.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import warnings
from collections import Counter
from contextlib import contextmanager, suppress
from pathlib import Path

from ..config import DEFAULT_MODEL
from ..exceptions import STOP_SIGNALS, Terminated, UnknownTokenWarning
from ..progress import end_bar

__all__ = ["OPTIONS", "ArgumentParser", "HelpFormatter", "add_file_options", "add_options",
           "checked", "device_name", "given_options", "non_negative_float", "non_negative_int",
           "output_path", "plain_warnings", "positive_float", "positive_int", "probability", "random_seed",
           "report_error", "report_warning", "run_interruptible"]

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, except the uninformative ``None`` and ``False``."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message):
        report_error(self.prog, f"{message} (see --help)")
        sys.exit(2)


def report_error(prog: str, message) -> int:
    """Print a user error as one line, without traceback; returns exit status 2."""
    end_bar()
    print(f"{rank_prefix()}{prog}: error: {message}", file=sys.stderr)
    return 2


def report_warning(prog: str, message) -> None:
    """Print a warning as one line: ``PROG: warning: MESSAGE``."""
    end_bar()
    print(f"{rank_prefix()}{prog}: warning: {message}", file=sys.stderr)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def run_interruptible(prog: str, run) -> int:
    """``run()``'s exit status. Ctrl-C, SIGTERM and SIGHUP unwind the command like an error, so
    every ``finally`` runs and no partial output stays; they end it with one line instead of a
    traceback, and the shell's status for the signal (130, 143 or 129)."""
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        previous = {signum: signal.signal(signum, _raise_terminated) for signum in STOP_SIGNALS}
    try:
        return run()
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, Terminated) else signal.SIGINT
        said = "interrupted" if signum == signal.SIGINT else "terminated"
        with suppress(OSError):  # after SIGHUP the terminal may be gone
            end_bar()
            print(f"{rank_prefix()}{prog}: {said}", file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def rank_prefix() -> str:
    # Under torchrun a message may come from one rank only, so every rank names itself.
    return f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""


@contextmanager
def plain_warnings(prog: str):
    """Within the block, warnings print as :func:`report_warning` lines, not Python's two lines.

    Yields a ``Counter`` of the tokens the model did not know: those warnings are added up there
    rather than printed (each chunk of a file warns about its own), for one line at the end.
    """
    unknown = Counter()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UnknownTokenWarning):
            unknown.update(message.counts)
        else:
            report_warning(prog, message)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UnknownTokenWarning)  # a repeated message still counts
        warnings.showwarning = show
        yield unknown


def output_path(text: str) -> Path | None:
    """A text ``--output``: a file, or ``-`` for stdout, as without the option."""
    return None if text == "-" else Path(text)


def given_options(build_parser, argv, names) -> list[str]:
    """Which of the options ``names`` (dests) ``argv`` sets itself, as flags: argparse keeps no
    record of it, so ``argv`` is parsed again by a fresh ``build_parser()`` with a marker for those
    options' defaults."""
    probe, unset = build_parser(), object()
    probe.set_defaults(**dict.fromkeys(names, unset))
    parsed = vars(probe.parse_args(sys.argv[1:] if argv is None else argv))
    return ["--" + name.replace("_", "-") for name in names if parsed[name] is not unset]


def checked(kind, test, requirement: str):
    """An argparse ``type``: ``kind(text)``, which must pass ``test`` (described by ``requirement``);
    an ``int`` must also be at most ``sys.maxsize``, as it is refused later, by ``islice`` say."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        if kind is int and abs(value) > sys.maxsize:  # the most a count, a slice or an index takes
            raise argparse.ArgumentTypeError(f"must be at most {sys.maxsize}, got {text!r}")
        return value
    return parse


positive_int = checked(int, lambda v: v > 0, "a positive integer")
# float() reads "inf" and "nan" too; neither is a usable scale, rate or weight (NaN fails both tests).
positive_float = checked(float, lambda v: 0 < v < math.inf, "a finite positive number")
non_negative_float = checked(float, lambda v: 0 <= v < math.inf, "a finite number, zero or positive")
non_negative_int = checked(int, lambda v: v >= 0, "zero or a positive integer")
random_seed = checked(int, lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1")  # NumPy's range
probability = checked(float, lambda v: 0 <= v < 1, "in [0, 1)")


def device_name(text: str) -> str:
    import torch  # only once an option is parsed, not for --help

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    return text


# The options that several commands take, with the same meaning and help in each.
OPTIONS = {
    "input": {"type": Path, "help": "SMILES file: .smi, .txt or .csv, optionally .gz"},
    "--model": {"default": DEFAULT_MODEL, "help": "bundled model name or model directory"},
    "--column": {"help": "CSV column with the SMILES, in any case if only one matches (default: 'smiles', "
                         "else the first)"},
    "--device": {"type": device_name, "help": "torch device (default: cuda, then mps, then cpu)"},
}


def add_options(parser, *names: str) -> None:
    """Add the :data:`OPTIONS` named to ``parser`` (or an argument group), in that order."""
    for name in names:
        parser.add_argument(name, **OPTIONS[name])


def add_file_options(parser, errors: str, chunk_size: str) -> None:
    """The options of a command that streams a SMILES file through a model a chunk at a time:
    ``--column``, ``--errors``, ``--batch-size``, ``--chunk-size`` and ``--device``, with the help
    of ``--errors`` and ``--chunk-size``, which say what the command does with them."""
    from ..file_embedding import CHUNK_SIZE  # here: the dispatcher, which imports this module, loads no numpy

    add_options(parser, "--column")
    parser.add_argument("--errors", choices=("raise", "nan"), default="raise", help=errors)
    parser.add_argument("--batch-size", type=positive_int, default=256, help="molecules per forward pass")
    parser.add_argument("--chunk-size", type=positive_int, default=CHUNK_SIZE, help=chunk_size)
    add_options(parser, "--device")
