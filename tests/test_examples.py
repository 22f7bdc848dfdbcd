"""The examples gallery and the documentation build, as CI runs them (needs the ``docs`` extra).

Each example runs in a fresh interpreter, as a user would run it, with ``--quick`` so that it
trains a tiny model in seconds instead of needing a bundled one.
"""

import os
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
