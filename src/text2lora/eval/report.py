"""Reports of an evaluation: JSON (every per-example record), Markdown and CSV tables in the paper's
layout (rows = conditions, columns = benchmarks + average), a PNG bar chart, and comparisons.

Scores are percentages. Multiple-choice columns use the accuracy named in ``mc_metric`` (``acc``:
choice with the highest summed log-probability; ``acc_norm``: highest log-probability per
character); both are kept in the JSON. GSM8K: last number of a greedy chain-of-thought answer.
HumanEval/MBPP: pass@1 of the greedy completion in the sandbox.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..data import BENCHMARKS
from ..errors import T2LError

__all__ = ["summarize", "markdown_table", "csv_table", "write_reports", "compare", "paired_difference",
           "bootstrap_means", "paired_markdown", "MC_METRIC_NOTE"]

MC_METRIC_NOTE = {"acc": "multiple choice: log-likelihood accuracy, summed over the choice's tokens (acc)",
                  "acc_norm": "multiple choice: log-likelihood accuracy, normalised by the choice's length in "
                              "characters (acc_norm)"}
LABEL_NOTE = ("multiple choice (labels protocol): the choices listed with labels, the greedy answer counted right "
              "when it starts with the gold label")

_SHORT = {"arc_challenge": "ARC-c", "arc_easy": "ARC-e", "boolq": "BoolQ", "gsm8k": "GSM8K",
          "hellaswag": "HS", "openbookqa": "OQA", "piqa": "PIQA", "winogrande": "WG", "humaneval": "HE",
          "mbpp": "MBPP"}


def _ordered(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def summarize(records: Sequence[dict[str, Any]], mc_metric: str = "acc_norm",
              conditions: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
              only: bool = False) -> dict[str, Any]:
    """Per (condition, task) score, count and both MC accuracies; per condition the average.

    ``conditions`` and ``tasks`` order the rows and columns; with ``only`` they also select them (a
    sub-table, e.g. the seven multiple-choice benchmarks), and a name with no results is an error.
    The average is over the tasks every condition row shows; a missing cell makes the row's average
    ``None`` (never an average over a different set of tasks).
    """
    if only:
        for what, want, have in (("condition", conditions, {r["condition"] for r in records}),
                                 ("task", tasks, {r["task"] for r in records})):
            missing = [w for w in want or [] if w not in have]
            if missing:
                raise T2LError(f"no results for {what} {missing}; these have results: {sorted(have)}")
        records = [r for r in records if (not conditions or r["condition"] in conditions)
                   and (not tasks or r["task"] in tasks)]
    conds = _ordered([r["condition"] for r in records], conditions or [])
    names = _ordered([r["task"] for r in records], tasks or list(BENCHMARKS))
    cells: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in conds}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["condition"], r["task"]), []).append(r)
    for (c, t), rs in groups.items():
        cell: dict[str, Any] = {"n": len(rs), "metric": rs[0]["metric"], "split": rs[0]["split"]}
        if rs[0]["metric"] == "choice_acc":
            cell["acc"] = 100 * sum(r["acc"] for r in rs) / len(rs)
            cell["acc_norm"] = 100 * sum(r["acc_norm"] for r in rs) / len(rs)
            cell["score"] = cell[mc_metric]
        else:
            cell["score"] = 100 * sum(r["correct"] for r in rs) / len(rs)
        if rs[0]["metric"] == "choice_label":
            cell.update(_answer_positions(rs))
        cells[c][t] = cell
    avg = {}
    for c in conds:
        vals = [cells[c].get(t, {}).get("score") for t in names]
        avg[c] = sum(vals) / len(vals) if vals and all(v is not None for v in vals) else None
    kinds = {cell["metric"] for row in cells.values() for cell in row.values()}
    notes = [MC_METRIC_NOTE[mc_metric]] if "choice_acc" in kinds or "choice_label" not in kinds else []
    notes += [LABEL_NOTE] if "choice_label" in kinds else []
    return {"mc_metric": mc_metric, "mc_metric_note": "; ".join(notes), "conditions": conds,
            "tasks": names, "scores": cells, "average": avg}


#: A labelled cell where one answer position takes at least this share of the answers is flagged.
POSITION_BIAS = 0.8


def _answer_positions(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Of a labelled cell's answers: the share that named no label, and the most chosen position and its share."""
    counts = Counter(r["pred"] for r in rs if r.get("pred") is not None)
    top, n = counts.most_common(1)[0] if counts else (None, 0)
    return {"unread": 100 * (len(rs) - sum(counts.values())) / len(rs), "top_position": top, "top_share": 100 * n / len(rs)}


def _position_warning(summary: dict[str, Any]) -> str | None:
    biased = [f"{c} / {_SHORT.get(t, t)}: {cell['top_share']:.0f}% choice {cell['top_position'] + 1}"
              for c in summary["conditions"] for t, cell in summary["scores"][c].items()
              if cell.get("top_position") is not None and cell["top_share"] >= 100 * POSITION_BIAS]
    if not biased:
        return None
    return (f"Labels protocol: in {len(biased)} cell(s) one answer position takes >= {100 * POSITION_BIAS:.0f}% of "
            f"the answers, so the score there says more about a position preference than about the task: "
            + "; ".join(biased) + ".")


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The paper's layout: a row per condition, a column per benchmark, then the average."""
    tasks = summary["tasks"]
    head = "| condition | " + " | ".join(_SHORT.get(t, t) for t in tasks) + " | Avg. |"
    lines = [head, "|---|" + "---:|" * (len(tasks) + 1)]
    for c in summary["conditions"]:
        row = [_fmt(summary["scores"][c].get(t, {}).get("score")) for t in tasks]
        lines.append(f"| {c} | " + " | ".join(row) + f" | {_fmt(summary['average'][c])} |")
    ns = sorted({cell["n"] for c in summary["conditions"] for cell in summary["scores"][c].values()})
    lines.append("")
    lines.append(f"Scores in %; {summary['mc_metric_note']}; GSM8K: last number of a greedy chain-of-thought "
                 f"answer; HE/MBPP: pass@1 (greedy, sandboxed). Examples per cell: {', '.join(map(str, ns))}.")
    warning = _position_warning(summary)
    if warning:
        lines += ["", warning]
    return "\n".join(lines) + "\n"


def csv_table(summary: dict[str, Any]) -> str:
    """One row per (condition, task): score, n, and both multiple-choice accuracies."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["condition", "task", "metric", "split", "n", "score", "acc", "acc_norm"])
    for c in summary["conditions"]:
        for t in summary["tasks"]:
            cell = summary["scores"][c].get(t)
            if cell:
                w.writerow([c, t, cell["metric"], cell["split"], cell["n"], f"{cell['score']:.4f}",
                            f"{cell['acc']:.4f}" if "acc" in cell else "",
                            f"{cell['acc_norm']:.4f}" if "acc_norm" in cell else ""])
        if summary["average"][c] is not None:
            w.writerow([c, "average", "", "", "", f"{summary['average'][c]:.4f}", "", ""])
    return buf.getvalue()


def bar_chart(summary: dict[str, Any], path: str | Path) -> bool:
    """A grouped bar chart of a summary (benchmarks + average, one bar per condition) as a PNG at ``path``;
    False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    tasks = summary["tasks"] + ["average"]
    conds = summary["conditions"]
    width = 0.8 / max(1, len(conds))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks)), 4))
    for k, c in enumerate(conds):
        ys = [summary["scores"][c].get(t, {}).get("score") or 0.0 for t in summary["tasks"]]
        ys.append(summary["average"][c] or 0.0)
        ax.bar([i + k * width for i in range(len(tasks))], ys, width, label=c)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], [_SHORT.get(t, t) for t in tasks], rotation=30)
    ax.set_ylabel("score (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return True


def write_reports(records: Sequence[dict[str, Any]], out: str | Path, mc_metric: str = "acc_norm",
                  conditions: Sequence[str] | None = None, config: dict | None = None) -> dict[str, Any]:
    """Write ``results.json``, ``results.md``, ``results.csv`` (and ``results.png`` with matplotlib); when the
    bare-input suite was scored, also its table by task kind with paired intervals (``instruct.md``/``.json``)."""
    out = Path(out)
    summary = summarize(records, mc_metric, conditions)
    atomic_write_json(out / "results.json", {"summary": summary, "config": config or {}, "examples": list(records)})
    atomic_write_text(out / "results.md", markdown_table(summary))
    atomic_write_text(out / "results.csv", csv_table(summary))
    summary["png"] = bar_chart(summary, out / "results.png")
    from .instruct import instruct_markdown, instruct_summary  # the bare-input suite's own table, if it ran

    suite = instruct_summary(records, conditions)
    summary["instruct"] = instruct_markdown(suite)
    if suite:
        atomic_write_json(out / "instruct.json", suite)
        atomic_write_text(out / "instruct.md", summary["instruct"])
    return summary


def _load_summary(path: str | Path, mc_metric: str | None) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise T2LError(f"{path}: no results.json; pass a results.json written by `t2l eval` (or its directory)")
    data = read_json(p)
    if "examples" not in data or "summary" not in data:
        raise T2LError(f"{p} is not a results.json written by `t2l eval`")
    metric = mc_metric or data["summary"].get("mc_metric", "acc_norm")
    return summarize(data["examples"], metric, data["summary"].get("conditions"))


def compare(a: str | Path, b: str | Path, mc_metric: str | None = None) -> str:
    """A Markdown table of ``b - a`` (percentage points) for every condition and task both contain.

    Cells present in one report only are shown as ``-``; the example counts of both are listed when
    they differ (comparing different subsets is flagged, not hidden).
    """
    sa, sb = _load_summary(a, mc_metric), _load_summary(b, mc_metric)
    conds = [c for c in sb["conditions"] if c in sa["conditions"]] or []
    if not conds:
        raise T2LError(f"{a} and {b} have no condition in common (a: {sa['conditions']}, b: {sb['conditions']})")
    tasks = [t for t in sb["tasks"] if t in sa["tasks"]]
    lines = [f"b - a (percentage points); a = {a}, b = {b}", "",
             "| condition | " + " | ".join(_SHORT.get(t, t) for t in tasks) + " | Avg. |",
             "|---|" + "---:|" * (len(tasks) + 1)]
    notes = []
    for c in conds:
        row, da, db = [], [], []
        for t in tasks:
            ca, cb = sa["scores"][c].get(t), sb["scores"][c].get(t)
            if ca and cb:
                row.append(f"{cb['score'] - ca['score']:+.2f}")
                da.append(ca["score"])
                db.append(cb["score"])
                if ca["n"] != cb["n"]:
                    notes.append(f"{c} / {t}: n = {ca['n']} vs {cb['n']}")
            else:
                row.append("-")
        avg = f"{sum(db) / len(db) - sum(da) / len(da):+.2f}" if da and len(da) == len(tasks) else "-"
        lines.append(f"| {c} | " + " | ".join(row) + f" | {avg} |")
    if notes:
        lines += ["", "different example counts: " + "; ".join(notes)]
    return "\n".join(lines) + "\n"


def _item_scores(records: Sequence[dict[str, Any]], condition: str, mc_metric: str) -> dict[tuple[str, str, int], float]:
    return {(r["task"], r["split"], r["index"]): 100.0 * (r[mc_metric] if r["metric"] == "choice_acc" else r["correct"])
            for r in records if r["condition"] == condition}


def bootstrap_means(d: Any, rng: Any, n_boot: int = 10_000) -> Any:
    """``[n_boot]``: the means of ``n_boot`` resamples, with replacement, of the paired differences ``d``
    (a 1-d numpy array), drawn from the numpy generator ``rng``."""
    return d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)


def paired_difference(records: Sequence[dict[str, Any]], a: str, b: str, tasks: Sequence[str] | None = None,
                      mc_metric: str = "acc_norm", n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """``b - a`` on the items both conditions scored, with paired bootstrap 95% intervals.

    Each resample draws, per task, that task's items with replacement and keeps both conditions'
    scores of each drawn item together, so the interval reflects how much the two conditions differ
    on the same items rather than how hard the items are. The average is over tasks (each task
    weighs the same, as in the tables). ``p_not_above`` is the share of resamples in which ``b`` is
    not above ``a`` on average (a one-sided bootstrap p-value).
    """
    import numpy as np

    sa, sb = _item_scores(records, a, mc_metric), _item_scores(records, b, mc_metric)
    for label, scores in ((a, sa), (b, sb)):
        if not scores:
            have = sorted({r["condition"] for r in records})
            raise T2LError(f"no results for condition {label!r}; these have results: {have}")
    common = sorted(set(sa) & set(sb))
    names = _ordered([k[0] for k in common], tasks or list(BENCHMARKS))
    if tasks:
        missing = [t for t in tasks if t not in names]
        if missing:
            raise T2LError(f"{a!r} and {b!r} share no scored items on {missing}; score both there first")
        names = [t for t in names if t in tasks]
    if not names:
        raise T2LError(f"{a!r} and {b!r} share no scored items; evaluate both on the same benchmarks and --seed")
    rng = np.random.default_rng(seed)
    rows, boot_means = [], []
    by_task: dict[str, list[tuple[str, str, int]]] = {}
    for k in common:
        by_task.setdefault(k[0], []).append(k)
    for t in names:
        keys = by_task[t]
        d = np.array([sb[k] - sa[k] for k in keys])
        boot = bootstrap_means(d, rng, n_boot)
        boot_means.append(boot)
        rows.append({"task": t, "n": len(d), "a": float(np.mean([sa[k] for k in keys])),
                     "b": float(np.mean([sb[k] for k in keys])), "diff": float(d.mean()),
                     "ci": [float(x) for x in np.percentile(boot, [2.5, 97.5])],
                     "wins": int((d > 0).sum()), "losses": int((d < 0).sum())})
    avg_boot = np.mean(boot_means, axis=0)
    avg = {"a": float(np.mean([r["a"] for r in rows])), "b": float(np.mean([r["b"] for r in rows])),
           "diff": float(np.mean([r["diff"] for r in rows])),
           "ci": [float(x) for x in np.percentile(avg_boot, [2.5, 97.5])],
           "p_not_above": float((avg_boot <= 0).mean())}
    return {"a": a, "b": b, "mc_metric": mc_metric, "n_boot": n_boot, "seed": seed, "tasks": rows, "average": avg}


def paired_markdown(result: dict[str, Any]) -> str:
    """A table of :func:`paired_difference`: per task and on average, both scores, b - a and its interval."""
    a, b = result["a"], result["b"]
    lines = [f"b - a on the same items (paired bootstrap, {result['n_boot']} resamples, 95% interval); "
             f"a = {a}, b = {b}", "",
             "| benchmark | n | a | b | b - a | 95% interval | items b wins / loses |", "|---|---:|---:|---:|---:|---|---:|"]
    for r in result["tasks"]:
        lines.append(f"| {_SHORT.get(r['task'], r['task'])} | {r['n']} | {r['a']:.1f} | {r['b']:.1f} | {r['diff']:+.2f} "
                     f"| [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}] | {r['wins']} / {r['losses']} |")
    v = result["average"]
    lines.append(f"| **average** | | {v['a']:.2f} | {v['b']:.2f} | **{v['diff']:+.2f}** "
                 f"| [{v['ci'][0]:+.2f}, {v['ci'][1]:+.2f}] | |")
    lines += ["", f"share of resamples with b not above a on average: {v['p_not_above']:.4f}"]
    return "\n".join(lines) + "\n"
