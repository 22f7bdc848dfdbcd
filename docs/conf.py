"""Sphinx configuration. Builds offline: no intersphinx, no theme or extension beyond Sphinx and MyST.

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import importlib
import os
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

import sklearn_cmim
from sklearn_cmim.cli import COMMANDS, build_parser

DOCS = Path(__file__).resolve().parent

project = "sklearn-cmim"
author = "the sklearn-cmim developers"
copyright = "the sklearn-cmim developers"
release = version = sklearn_cmim.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
myst_enable_extensions = ["dollarmath", "substitution"]
# method.md and benchmarks.md are pages of their own on GitHub; here other pages include them.
exclude_patterns = ["_build", "method.md", "benchmarks.md"]
html_static_path = ["_static"]
html_title = f"sklearn-cmim {release}"
smartquotes = False  # it would turn the "--" of command-line options in docstrings into dashes

napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # the signatures stay short; the types go beside each parameter


# Pages whose content lands later (model cards, benchmark results) pick it up when it exists and
# say what is coming until then, so the build passes -W at every stage of the project.
def _model_cards() -> str:
    cards = sorted(p.stem for p in (DOCS / "models").glob("*.md"))
    if not cards:
        return ("No model is bundled with this version yet. Each bundled model will get a card here, "
                "written by `benchmarks/evaluation/pretrained_metrics.py` from measured numbers only.")
    return "```{toctree}\n:maxdepth: 1\n\n" + "\n".join(f"models/{card}" for card in cards) + "\n```"


def _benchmarks() -> str:
    if (DOCS / "benchmarks.md").is_file():
        return "```{include} benchmarks.md\n```"
    return (
        "# Benchmarks\n\n"
        "The results are not in yet. The benchmarks will measure, on the same splits and with the "
        "same prediction heads:\n\n"
        "* cMIM against MIM (`contrastive_weight=0`) embeddings on ESOL, FreeSolv and Lipophilicity;\n"
        "* informative against latent embeddings, for both;\n"
        "* greedy exact-match reconstruction of held-out molecules, cMIM against MIM;\n"
        "* how much the contrastive term depends on the batch size, against InfoNCE with "
        "randomised-SMILES augmentation;\n"
        "* ECFP4 fingerprints as the baseline every learned embedding has to beat."
    )


myst_substitutions = {"model_cards": _model_cards(), "benchmarks": _benchmarks()}

# argparse wraps --help to the terminal's width; a fixed one makes the CLI page the same everywhere.
os.environ["COLUMNS"] = "100"


class CommandHelp(SphinxDirective):
    """``{cmim-help} pretrain`` shows ``cmim pretrain --help`` (no argument: ``cmim --help``).

    Generated from the parsers themselves, so the CLI page cannot drift from the code.
    """

    optional_arguments = 1

    def run(self):
        if self.arguments:
            command = self.arguments[0]
            parser = importlib.import_module(COMMANDS[command][0]).build_parser(f"cmim {command}")
        else:
            parser = build_parser()
        text = parser.format_help()
        return [nodes.literal_block(text, text, language="text")]


def setup(app):
    app.add_directive("cmim-help", CommandHelp)
