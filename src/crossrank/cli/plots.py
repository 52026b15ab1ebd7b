"""``--plot FILE`` for ``crossrank eval`` and ``crossrank bench``: the report's shape as a figure.

A table of nDCG@10 per rerank depth hides where the curve turns; a table of ms per method and
workload hides how far apart the methods are. These functions draw the reports the two commands
already return (the same dicts ``--json`` prints), so a figure always comes from a product run:

* :func:`plot_eval`: nDCG@10 against rerank depth, one line per first stage × rerank setting ×
  fusion, each first stage alone as a dashed level, and the rerank ms/query on a second axis;
* :func:`plot_bench`: ms per query for each method and workload (log scale), the matmul floor of
  ``--roofline`` as a line over the headline workload where it was measured.

The format follows the file's suffix (``.png`` or ``.svg``); matplotlib is imported only here, when
a plot is asked for (``pip install 'crossrank[plot]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossrank.errors import InvalidArgumentError, missing_extra

PLOT_SUFFIXES: tuple[str, ...] = (".png", ".svg")
_DPI = 110


def check_plot_path(path: str | Path) -> Path:
    """``path`` as a ``Path`` if a plot can be written there (suffix .png or .svg, folder exists), else raise.

    Called before the command does its work, so a typo does not cost a long run.
    """
    out = Path(path)
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise InvalidArgumentError(
            f"--plot {str(path)!r}: the file name must end in {' or '.join(PLOT_SUFFIXES)} (the format follows it)"
        )
    if not out.parent.is_dir():
        raise InvalidArgumentError(f"--plot {str(path)!r}: folder {str(out.parent)!r} does not exist")
    _pyplot()  # a missing matplotlib is reported now, not after the run
    return out


def _pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend, or the ImportError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise missing_extra("matplotlib", "plot") from exc
    return plt


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG or SVG by the suffix, without timestamps (the same run gives the same file)."""
    import matplotlib

    suffix = path.suffix.lower()
    if suffix == ".svg":  # text stays text (small, searchable); fixed ids: the same figure, the same file
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "crossrank"}):
            fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    else:
        fig.savefig(path, format="png", dpi=_DPI, metadata={"Software": None}, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _setting_label(row: dict[str, Any], report: dict[str, Any]) -> str:
    """The parts of a row's rerank setting that vary in this report (first stage, length, mode, fusion)."""
    rows = report["rows"]
    parts = [str(row["first_stage"])]
    if len({r["long_documents"] for r in rows}) > 1 or len({r["max_length"] for r in rows}) > 1:
        parts.append(f"{row['long_documents']} {row['max_length']}")
    if row["fusion"] != "none":
        parts.append(f"+ {row['fusion']}")
    stage = row.get("stage")  # late-interaction rows (crossrank eval --late-interaction)
    if stage == "late":
        parts.append("· late interaction alone")
    elif stage == "late+rerank":
        parts.append(f"· late top {row['late_candidates']} → rerank")
    return " ".join(parts)


def _depth(row: dict[str, Any]) -> int:
    """The x of a row: how many candidates its last stage reordered (late interaction's own depth alone)."""
    return int(row["late_candidates"] if row.get("stage") == "late" else row["candidates"])


def plot_eval(report: dict[str, Any], path: str | Path, *, cpu: str | None = None) -> Path:
    """Draw a ``crossrank eval`` report: nDCG@10 against rerank depth, ms/query on a second axis.

    One line per first stage × rerank setting × fusion over the depths the run measured (a single
    depth is one marker); each first stage alone is a dashed level in its line's colour. The grey
    dotted line on the right axis is the rerank p50 ms/query at each depth (timed on the run's first
    first stage with an empty score cache, as the table's ms/query column). ``cpu`` goes into the
    title (the CPU line of :func:`crossrank.cpuinfo.describe`).
    """
    out = check_plot_path(path)
    plt = _pyplot()
    rows: list[dict[str, Any]] = report["rows"]
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    stage_colour = {s: colours[i % len(colours)] for i, s in enumerate(report["first_stages"])}
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    lines: dict[str, list[tuple[int, float]]] = {}
    stage_of: dict[str, str] = {}
    for row in rows:
        label = _setting_label(row, report)
        lines.setdefault(label, []).append((_depth(row), float(row["metrics"]["ndcg@10"])))
        stage_of[label] = row["first_stage"]
    for i, (label, points) in enumerate(lines.items()):
        points.sort()
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker=markers[i % len(markers)],
            linestyle="--" if label.endswith("+ rrf") else "-",
            color=stage_colour.get(stage_of[label]),
            label=f"{label} (reranked)",
        )
    for stage, first in report["first_stages"].items():
        ax.axhline(
            first["metrics"]["ndcg@10"],
            color=stage_colour[stage],
            linestyle=":",
            linewidth=1.2,
            label=f"{stage} alone",
        )
    depths = sorted({_depth(r) for r in rows})
    ax.set_xlabel("rerank depth (candidates the reranker sees)")
    ax.set_ylabel("nDCG@10")
    ax.set_xticks(depths)
    ax.grid(True, alpha=0.3)
    ms: dict[int, float] = {}
    for row in rows:
        if row.get("stage") in (None, "rerank"):  # the cross-encoder's own cost at each depth
            ms.setdefault(int(row["candidates"]), float(row["rerank_ms"]["p50"]))
    ax2 = ax.twinx()
    ax2.plot(
        sorted(ms), [ms[d] for d in sorted(ms)], color="0.45", linestyle=":", marker=".", label="rerank ms/query (p50)"
    )
    ax2.set_ylabel("rerank ms/query (p50)", color="0.35")
    ax2.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    # Beside the plot, right of the second axis: inside it the legend would hide points.
    ax.legend(handles + h2, labels + l2, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.13, 1.0), borderaxespad=0)
    title = (
        f"{Path(str(report['dataset'])).name}: {report['queries']} queries · "
        f"{Path(str(report['model'])).name} ({report['backend']})"
    )
    ax.set_title(title + (f"\nCPU: {cpu}" if cpu else ""), fontsize=9)
    return _save(fig, out)


def plot_bench(result: dict[str, Any], path: str | Path) -> Path:
    """Draw a ``crossrank bench`` result: ms per query for each method, grouped by workload (log scale).

    Each bar is labelled with its ms and its speed-up against the run's baseline method (a). Where
    ``--roofline`` measured the matmul floor, the fastest floor is a dashed line over the headline
    workload (100 candidates × 200 tokens), labelled with its precision. The CPU line is the title.
    """
    out = check_plot_path(path)
    plt = _pyplot()
    rows: list[dict[str, Any]] = result["rows"]
    workloads = list(dict.fromkeys((int(r["candidates"]), int(r["tokens"])) for r in rows))
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + 1.5 * len(workloads) * max(1, len(methods)) / 3), 4.8))
    by_key = {(int(r["candidates"]), int(r["tokens"]), str(r["method"])): r for r in rows}
    for j, method in enumerate(methods):
        xs, ys, notes = [], [], []
        for i, (n, t) in enumerate(workloads):
            r = by_key.get((n, t, method))
            if r is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(float(r["ms_per_query"]))
            notes.append(f"{r['ms_per_query']:.0f}\n{r['speedup_vs_a']:.2f}×")
        bars = ax.bar(xs, ys, width=width * 0.92, label=method)
        for bar, note in zip(bars, notes):
            ax.annotate(
                note,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=6.5,
                xytext=(0, 1),
                textcoords="offset points",
            )
    floor = result.get("roofline") or {}
    if floor and (100, 200) in workloads:
        best = min(floor, key=lambda p: floor[p]["ms"])
        i = workloads.index((100, 200))
        ax.hlines(floor[best]["ms"], i - 0.45, i + 0.45, colors="k", linestyles="--", linewidth=1.2)
        ax.annotate(
            f"{best} matmul floor {floor[best]['ms']:.0f} ms",
            (i + 0.45, floor[best]["ms"]),
            ha="right",
            va="top",
            fontsize=7,
            xytext=(0, -2),
            textcoords="offset points",
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels([f"{n} candidates × {t} tokens" for n, t in workloads], fontsize=8)
    ax.set_ylabel("ms per query (median, log scale)")
    ax.grid(True, axis="y", alpha=0.3, which="both")
    ax.margins(y=0.15)
    ax.legend(
        fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, title="method", title_fontsize=8
    )
    ax.set_title(f"crossrank bench · CPU: {result.get('cpu', '?')}", fontsize=9)
    return _save(fig, out)
