"""The package's layers, as its folders show them, and the one way imports flow between them.

    cli/          the ``cmim`` commands: a parser and a ``main`` each, nothing else; with
                  ``__main__`` (``python -m sklearn_cmim``), which runs the dispatcher
    (top level)   the public API: CMIMTransformer, the baseline featurisers, data sets,
                  optimisation, embedding files
    training/     the fit and pretraining loops and what they read and write
    persistence   saved model directories (loaded by the API, written by training)
    nn/           the network, its losses and embeddings, the device it runs on
    chem/         molecules, tokens, batches, SMILES files and corpora
    (base)        exceptions, settings, the progress bar: no package import at all

A module may import its own layer and those below it, never one above: each test here names the
offending module and import. Modules are read with ``ast``, not imported, so the imports inside
functions (the lazy ones that keep ``--help`` fast) count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sklearn_cmim"

# Lowest first. A module belongs to the first layer whose test accepts its dotted name.
BASE = {"sklearn_cmim.exceptions", "sklearn_cmim.config", "sklearn_cmim.progress"}
LAYERS = [
    ("base", lambda name: name in BASE),
    ("chem", lambda name: name.startswith("sklearn_cmim.chem")),
    ("nn", lambda name: name.startswith("sklearn_cmim.nn")),
    ("persistence", lambda name: name == "sklearn_cmim.persistence"),
    ("training", lambda name: name.startswith("sklearn_cmim.training")),
    ("cli", lambda name: name.startswith("sklearn_cmim.cli") or name == "sklearn_cmim.__main__"),
    ("api", lambda name: True),  # the rest of the top level, and the package itself
]
# The rank of each layer: cli sits above the public API, whatever the list's order above.
RANK = {"base": 0, "chem": 1, "nn": 2, "persistence": 3, "training": 4, "api": 5, "cli": 6}
# What a command may take from its own layer: the helpers every command shares. The dispatcher
# (``sklearn_cmim.cli``) names the commands as strings, imported on use, not with import statements;
# it and ``python -m sklearn_cmim``, which runs it, may import what they like of the layer.
CLI_SHARED = {"sklearn_cmim.cli.common"}
CLI_ENTRY = {"sklearn_cmim.cli", "sklearn_cmim.__main__"}

MAX_LINES = 400  # a module a newcomer reads in one sitting


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> str:
    return next(layer for layer, accepts in LAYERS if accepts(name))


def imported(path: Path, name: str):
    """(line, dotted module) for every import of the package in the file, resolved to absolute names;
    ``from X import y`` counts as ``X.y`` when ``X.y`` is a module of the package."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[:len(here.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                yield node.lineno, candidate if candidate in MODULES else module


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_found():
    # Guards the tests below against a path change that would silently check nothing.
    assert {"sklearn_cmim.transformer", "sklearn_cmim.chem.standardize", "sklearn_cmim.nn.model",
            "sklearn_cmim.training.fit", "sklearn_cmim.cli.embed", "sklearn_cmim.cli"} <= set(MODULES)
    assert {layer(name) for name in MODULES} == set(RANK)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_flow_down_the_layers(name):
    path = MODULES[name]
    own = layer(name)
    wrong = []
    for line, target in imported(path, name):
        if target != "sklearn_cmim" and not target.startswith("sklearn_cmim."):
            continue
        if target not in MODULES:  # e.g. an attribute of a module: check its module
            target = target.rpartition(".")[0]
        theirs = layer(target)
        if RANK[theirs] > RANK[own]:
            wrong.append(f"line {line}: imports {target} ({theirs} layer)")
        elif own == "cli" and theirs == "cli" and name not in CLI_ENTRY and target not in CLI_SHARED:
            wrong.append(f"line {line}: imports {target}: a command imports no other command")
    where = path.relative_to(PACKAGE.parent)
    assert not wrong, f"{where} ({own} layer) " + "; ".join(wrong)


def test_modules_stay_short():
    lengths = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in MODULES.values()}
    too_long = {path: n for path, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"
