"""The ``cmim`` command: ``cmim <command> [options]``.

Each command lives in its own module exposing the same two functions; adding one is one entry in
:data:`COMMANDS`. A command's module is imported only when it is named.

* ``build_parser(prog="cmim NAME")`` returns the command's
  :class:`~sklearn_cmim.cli.common.ArgumentParser`, whose errors are one line on stderr and exit
  status 2; ``prog`` is the program name shown in usage and error messages.
* ``main(argv=None, prog="cmim NAME")`` runs the command with ``argv`` (its arguments without the
  program name; ``None`` reads ``sys.argv[1:]``) and returns its exit status, which each
  command's docstring lists. Arguments that cannot be parsed raise ``SystemExit`` with status 2
  (one line on stderr), and ``--help`` with status 0.

So that ``--help`` answers at once, building a parser loads neither torch nor RDKit nor
scikit-learn: a command module imports them (or the package modules built on them) inside the
functions that do the work, not at its top. ``tests/test_cli_commands.py`` checks this.
"""

from __future__ import annotations

import argparse
import importlib

from ..exceptions import UnknownTokenWarning
from .common import ArgumentParser, plain_warnings, report_warning, run_interruptible

__all__ = ["COMMANDS", "build_parser", "main"]

# command -> (module, one-line description)
COMMANDS = {
    "demo": ("sklearn_cmim.cli.demo", "bundled cMIM embeddings against ECFP4 on ESOL, offline"),
    "pretrain": ("sklearn_cmim.cli.pretrain", "pretrain a cMIM model on SMILES files (also under torchrun)"),
    "export": ("sklearn_cmim.cli.export", "turn a pretraining checkpoint into a model directory"),
    "embed": ("sklearn_cmim.cli.embed", "embed every molecule of a SMILES file into .npy or .csv, streamed"),
    "sample": ("sklearn_cmim.cli.sample", "decode molecules from the latent prior or around given molecules"),
    "reconstruct": ("sklearn_cmim.cli.reconstruct", "encode and decode a SMILES file; exact-match accuracy"),
    "optimize": ("sklearn_cmim.cli.optimize", "search near each seed molecule for ones scoring higher"),
}


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
        stderr), 130 after Ctrl-C, 143 after SIGTERM and 129 after SIGHUP (none leaves a partial
        output); see each command's ``main``.

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
        status = run_interruptible(prog, lambda: module.main(args.args, prog=prog))
    if unknown_tokens and status == 0:  # after a failed run, its one-line error says enough
        report_warning(prog, UnknownTokenWarning(unknown_tokens))
    return status
