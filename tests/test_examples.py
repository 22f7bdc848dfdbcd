"""The examples gallery and the documentation build, as CI runs them (needs the ``docs`` extra).

Each example runs in a fresh interpreter, as a user would run it, with ``--quick`` so that it
trains a tiny model in seconds instead of needing a bundled one.
"""

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "plot_property_prediction.py": "property_prediction.png",
    "plot_embedding_map.py": "embedding_map.png",
    "plot_interpolation.py": "interpolation.png",
    "plot_sampling.py": "sampling.png",
    "plot_optimization.py": "optimization.png",
    "plot_descriptor_union.py": "descriptor_union.png",
}
# One thread: the examples are tiny, and CI machines may be running other jobs.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_every_example_is_tested():
    assert sorted(p.name for p in (ROOT / "examples").glob("plot_*.py")) == sorted(EXAMPLES)


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs_quick_and_draws_its_figure(script, tmp_path):
    result = run(f"examples/{script}", "--quick", "--output-dir", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    figure = tmp_path / EXAMPLES[script]
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_example_without_the_bundled_model_stops_in_one_line(tmp_path):
    result = run("examples/plot_embedding_map.py", "--model", "no-such-model", "--output-dir",
                 str(tmp_path), timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no-such-model" in result.stderr and "--quick" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_documentation_builds_without_warnings(tmp_path):
    result = run("-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path / "html"),
                 timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "html" / "index.html").is_file()


# ------------------------------------------------------------------- the API reference's examples
# A directive of docs/api.md and its option lines, e.g. ".. autoclass:: X" then "   :members: a, b".
DIRECTIVE = re.compile(r"^\.\. (autoclass|autofunction|automodule):: (\S+)[ \t]*\n((?:[ \t]+:.*\n?)*)", re.M)
# A numpydoc section heading: a title line underlined by dashes.
SECTION = re.compile(r"^(\S.*)\n-{3,}[ \t]*$", re.M)


def resolve(dotted: str):
    """The object a dotted name in docs/api.md names: a module, or an attribute of one."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], 2):
        try:
            obj = getattr(obj, name)
        except AttributeError:  # a submodule the package does not import itself
            obj = importlib.import_module(".".join(parts[:i]))
    return obj


def documented_api() -> list[str]:
    """Every object docs/api.md documents, as dotted names, in the page's order."""
    names = []
    for kind, target, options in DIRECTIVE.findall((ROOT / "docs" / "api.md").read_text()):
        if kind != "automodule":
            names.append(target)
        members = re.search(r":members:(.*)", options)
        if members is None:
            continue
        listed = [m.strip() for m in members.group(1).split(",") if m.strip()]
        if not listed:  # a bare :members: documents the module's __all__ (or the class's own methods)
            obj = resolve(target)
            listed = list(getattr(obj, "__all__", None) or [
                m for m, v in vars(obj).items() if not m.startswith("_") and callable(v)])
        names += [f"{target}.{m}" for m in listed]
    return names


def examples_section(doc: str) -> str:
    """The text of a numpydoc docstring's Examples section ('' without one)."""
    headings = list(SECTION.finditer(doc))
    for i, heading in enumerate(headings):
        if heading.group(1).strip() == "Examples":
            end = headings[i + 1].start() if i + 1 < len(headings) else len(doc)
            return doc[heading.end():end]
    return ""


API = documented_api()


def test_the_api_reference_is_read():
    # Guards the test below against a parsing change that would silently find nothing.
    assert len(API) >= 20 and "sklearn_cmim.CMIMTransformer.fit" in API and "sklearn_cmim.cli.main" in API


@pytest.mark.parametrize("name", API)
def test_every_documented_object_has_a_doctest_example(name):
    # The object's own docstring: an inherited one would not show this object's use.
    doc = inspect.cleandoc(getattr(resolve(name), "__doc__", None) or "")
    examples = examples_section(doc)
    assert examples, f"{name} has no Examples section"
    assert any(line.lstrip().startswith(">>>") for line in examples.splitlines()), (
        f"the Examples section of {name} has no >>> line")
