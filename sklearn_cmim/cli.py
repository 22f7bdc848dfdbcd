"""The ``cmim`` command: ``cmim <command> [options]``.

Each command lives in its own module exposing ``build_parser(prog)`` and ``main(argv, prog)``;
adding one is one entry in :data:`COMMANDS`. A command's module is imported only when it is named.

So that ``--help`` answers at once, building a parser loads neither torch nor RDKit nor
scikit-learn: a command module imports them (or the package modules built on them) inside the
functions that do the work, not at its top. ``tests/test_cli_commands.py`` checks this.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections import Counter
from contextlib import contextmanager

from .exceptions import UnknownTokenWarning

__all__ = ["COMMANDS", "ArgumentParser", "HelpFormatter", "checked", "device_name", "main",
           "non_negative_float", "non_negative_int", "plain_warnings", "positive_float", "positive_int",
           "probability", "report_error", "report_warning"]

# command -> (module, one-line description)
COMMANDS = {
    "demo": ("sklearn_cmim.demo", "bundled cMIM embeddings against ECFP4 on ESOL, offline"),
    "pretrain": ("sklearn_cmim.pretrain", "pretrain a cMIM model on SMILES files (also under torchrun)"),
    "export": ("sklearn_cmim.export", "turn a pretraining checkpoint into a model directory"),
    "embed": ("sklearn_cmim.embed", "embed every molecule of a SMILES file into .npy or .csv, streamed"),
    "sample": ("sklearn_cmim.sample", "decode molecules from the prior or around given molecules"),
    "reconstruct": ("sklearn_cmim.reconstruct", "encode and decode a SMILES file; exact-match accuracy"),
    "optimize": ("sklearn_cmim.optimize", "search near each seed molecule for ones scoring higher"),
}


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
    print(f"{rank_prefix()}{prog}: error: {message}", file=sys.stderr)
    return 2


def report_warning(prog: str, message) -> None:
    """Print a warning as one line: ``PROG: warning: MESSAGE``."""
    print(f"{rank_prefix()}{prog}: warning: {message}", file=sys.stderr)


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


def checked(kind, test, requirement: str):
    """An argparse ``type``: ``kind(text)``, which must pass ``test`` (described by ``requirement``)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        return value
    return parse


positive_int = checked(int, lambda v: v > 0, "a positive integer")
positive_float = checked(float, lambda v: v > 0, "positive")
non_negative_float = checked(float, lambda v: v >= 0, "zero or positive")
non_negative_int = checked(int, lambda v: v >= 0, "zero or a positive integer")
probability = checked(float, lambda v: 0 <= v < 1, "in [0, 1)")


def device_name(text: str) -> str:
    import torch  # only once an option is parsed, not for --help

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    return text


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="cmim", description="Contrastive Mutual Information Machine (cMIM) for molecules.",
        epilog="commands:\n" + "\n".join(f"  {name:<12}{help_}" for name, (_, help_) in COMMANDS.items())
        + "\n\nrun 'cmim <command> --help' for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=COMMANDS, metavar="command",
                        help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    """Run ``cmim <command> [options]``: the command's ``main`` with the arguments after its name.

    Parameters
    ----------
    argv : list of str, optional
        The command's name, then its arguments; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        The command's exit status: 0 on success, 2 after a user error (reported in one line on
        stderr); see each command's ``main``.

    Raises
    ------
    SystemExit
        With status 2 when no command or an unknown one is given, or when the command's
        arguments cannot be parsed (reported in one line on stderr); 0 after ``--help``.

    Examples
    --------
    ``cmim sample`` from Python, writing two molecules around ethanol to a file:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from sklearn_cmim.cli import main
    >>> tmp = tempfile.TemporaryDirectory()
    >>> output = Path(tmp.name, "around.smi")
    >>> main(["sample", "--n", "2", "--around", "CCO", "--random-state", "0", "--output", str(output)])
    0
    >>> len(output.read_text().splitlines())
    2

    A user error is one line on stderr and a non-zero status, never a traceback:

    >>> main(["embed", str(Path(tmp.name, "missing.smi")), "--output", str(Path(tmp.name, "x.npy"))])
    2
    >>> tmp.cleanup()
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error(f"a command is required: {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[args.command][0])
    prog = f"cmim {args.command}"
    with plain_warnings(prog) as unknown_tokens:
        status = module.main(args.args, prog=prog)
    if unknown_tokens and status == 0:  # after a failed run, its one-line error says enough
        report_warning(prog, UnknownTokenWarning(unknown_tokens))
    return status
