"""The Transfer scores tab's charts: bars per target language, a source x target heat map, score against trainable
parameters, and the table; every score on the 0-100 scale."""

from __future__ import annotations

import statistics

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from madx_core.results import SYSTEM_NAMES as CORE_SYSTEM_NAMES
from madx_core.tasks import get_task

SYSTEM_NAMES = {**CORE_SYSTEM_NAMES, "baseline": "baseline (full fine-tuning)"}
SYSTEM_COLORS = {
    "baseline": "#8d99ae",
    "mlm-trg": "#adb5bd",
    "madx-lad": "#f4a261",
    "madx-inv": "#2a9d8f",
    "madx-src": "#9c6644",
    "madx": "#264653",
    "madx-anchor": "#6a4c93",
    "madx-lad-anchor": "#b5838d",
    "madx-lad-pool": "#e76f51",
    "madx-lad-more": "#e9c46a",
}
METRIC_LABELS = {"em": "exact match (EM)"}  # where the switch spells a metric out


def system_name(system: str) -> str:
    return SYSTEM_NAMES.get(system, system)


def order(systems: set[str]) -> list[str]:
    known = [s for s in SYSTEM_NAMES if s in systems]
    return known + sorted(systems - set(known))


def _empty(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _metric_name(task: str, metric: str) -> str:
    return f"{get_task(task).metrics.get(metric, metric.upper())} (0-100)"


def metric_choices(task: str) -> list[tuple[str, str]]:
    """(label, metric) of the task's metrics for the chart's metric switch."""
    return [(METRIC_LABELS.get(m, name), m) for m, name in get_task(task).metrics.items()]


def main_source(summary: list[dict]) -> str:
    """The source language the bars are about: English when it is there (the source x target matrix has the rest)."""
    sources = {s["source"] for s in summary}
    return "en" if "en" in sources or not sources else sorted(sources)[0]


def bars_figure(summary: list[dict], metric: str, task: str = "ner") -> go.Figure:
    """Grouped bars per target language from the main source: one bar per system; error bars (sample std) only
    where there are seeds."""
    fig = go.Figure()
    if not summary:
        return _empty(fig, "no results for this task and metric yet")
    source = main_source(summary)
    summary = [s for s in summary if s["source"] == source]
    targets = sorted({s["target"] for s in summary})
    for system in order({s["system"] for s in summary}):
        by_target = {s["target"]: s for s in summary if s["system"] == system}
        several = any(s["n"] > 1 for s in by_target.values())
        fig.add_trace(
            go.Bar(
                name=system_name(system),
                x=targets,
                y=[by_target[t]["mean"] if t in by_target else None for t in targets],
                error_y=dict(
                    type="data",
                    array=[by_target[t]["std"] if t in by_target else 0 for t in targets],
                    visible=several,  # one run has no spread to draw
                ),
                customdata=[
                    [by_target[t]["n"], by_target[t]["examples"] or "?"] if t in by_target else [0, "?"]
                    for t in targets
                ],
                hovertemplate=f"{system_name(system)}<br>%{{x}}: %{{y:.1f}}<br>%{{customdata[0]}} seed(s), "
                "%{customdata[1]} test examples<extra></extra>",
                marker_color=SYSTEM_COLORS.get(system),
            )
        )
    fig.update_layout(
        barmode="group",
        title=f"zero-shot transfer from {source} per target language<br>({_metric_name(task, metric)})",
        xaxis_title="target language",
        yaxis=dict(title=_metric_name(task, metric), range=[0, 100]),
        # the legend below grows with the systems (one line each on a phone): keep the bars' own height
        height=320 + 22 * len(fig.data),
        legend=dict(orientation="h", yanchor="top", y=-0.2),
        margin=dict(l=50, r=10, t=50, b=40),
    )
    return fig


def heatmap_figure(summary: list[dict], metric: str, system: str, task: str = "ner") -> go.Figure:
    rows = [s for s in summary if s["system"] == system]
    fig = go.Figure()
    if not rows:
        return _empty(fig, f"no results for {system_name(system)}")
    sources = sorted({s["source"] for s in rows})
    targets = sorted({s["target"] for s in rows})
    value = {(s["source"], s["target"]): s["mean"] for s in rows}
    z = [[value.get((src, tgt)) for tgt in targets] for src in sources]
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=targets,
            y=sources,
            zmin=0,
            zmax=100,  # the same scale as the bars: a single row is not stretched into one colour
            colorscale="Viridis",
            text=[[f"{v:.1f}" if v is not None else "" for v in row] for row in z],
            texttemplate="%{text}",
            colorbar=dict(title=metric.upper()),
        )
    )
    fig.update_layout(
        title=f"{system_name(system)}:<br>source × target ({_metric_name(task, metric)})",
        xaxis_title="target language",
        yaxis_title="source language",
        height=260 + 40 * len(sources),
        margin=dict(l=50, r=10, t=50, b=40),
    )
    return fig


MARKERS = ["circle", "square", "diamond", "triangle-up", "x", "star", "cross", "hexagon"]


def params_figure(summary: list[dict], metric: str, task: str = "ner") -> go.Figure:
    """Mean score over target languages against trainable parameters, one point per system (named in the legend)."""
    fig = go.Figure()
    points = []
    source = main_source(summary)
    summary = [s for s in summary if s["source"] == source]
    for system in order({s["system"] for s in summary}):
        rows = [
            s for s in summary if s["system"] == system and s["trainable_parameters"] and s["target"] != s["source"]
        ]
        if rows:
            params = statistics.fmean(r["trainable_parameters"] for r in rows)
            points.append((system, params, statistics.fmean(r["mean"] for r in rows), len(rows)))
    if not points:
        return _empty(fig, "no trainable-parameter counts in these results")
    for i, (system, params, score, n) in enumerate(points):
        fig.add_trace(
            go.Scatter(
                x=[params],
                y=[score],
                mode="markers",  # names go to the legend: systems with equal parameter counts would overlap
                marker=dict(size=14, color=SYSTEM_COLORS.get(system), symbol=MARKERS[i % len(MARKERS)]),
                name=system_name(system),
                hovertemplate=f"{system_name(system)}<br>%{{x:,.0f}} trainable parameters<br>"
                f"mean {metric.upper()} %{{y:.1f}} over {n} targets<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"mean zero-shot {metric.upper()} from {source} vs<br>trainable parameters",
        xaxis=dict(title="trainable parameters (log scale)", type="log", tickformat="~s", nticks=4),
        yaxis_title=_metric_name(task, metric),
        showlegend=True,
        legend=dict(orientation="h", y=-0.3),
        height=400,
        margin=dict(l=50, r=10, t=50, b=40),
    )
    return fig


LANG_COLORS = ["#e76f51", "#2a9d8f", "#264653", "#e9c46a", "#8d99ae", "#9c6644"]


def curve_rows(recipes: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """MAD-X's own recipe (random start) at each budget, per (target language, batch size), by steps: the learning
    curve. Batches of 16 are the CPU recipe, trained anew for each budget; batches of 64 (the paper's) are checkpoints
    of one GPU run per language."""
    rows = [
        r
        for r in recipes
        if r.get("curve") and isinstance(r.get("test"), dict) and isinstance(r.get("batch_size"), int)
    ]
    keys = sorted({(r["target"], r["batch_size"]) for r in rows})
    return {k: sorted((r for r in rows if (r["target"], r["batch_size"]) == k), key=lambda r: r["steps"]) for k in keys}


def curve_figure(recipes: list[dict]) -> go.Figure:
    """Sequences a language adapter was trained on (steps x batch, log scale) against its held-out MLM loss (left;
    dotted: no adapter) and against the zero-shot NER gain of swapping it in over keeping the English adapter (right;
    test F1, mean over the English task adapter's seeds). Solid: batches of 16 (CPU); dashed: batches of 64 (GPU)."""
    curves = curve_rows(recipes)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("held-out MLM loss (lower: knows the language)", "swap − keep English (NER F1 points)"),
        horizontal_spacing=0.14,
    )
    if not curves:
        return _empty(fig, "no learning curve in these assets")
    langs = sorted({lang for lang, _ in curves})
    for (lang, batch), rows in curves.items():
        color = LANG_COLORS[langs.index(lang) % len(LANG_COLORS)]
        seen = [r["steps"] * batch for r in rows]
        style = dict(color=color, dash="solid" if batch == min(b for _, b in curves) else "dash")
        name = f"{lang}, batches of {batch}"
        hover = f"{lang}: %{{customdata}} steps of {batch} (%{{x:,}} sequences)<br>"
        for col, y, what in (
            (1, [r["mlm_loss"] for r in rows], "MLM loss %{y:.2f}"),
            (2, [r["test"]["gain"] for r in rows], "swap − keep %{y:+.1f} F1"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=seen,
                    y=y,
                    customdata=[r["steps"] for r in rows],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line=style,
                    hovertemplate=hover + what + "<extra></extra>",
                ),
                row=1,
                col=col,
            )
    for lang in langs:  # the loss with no adapter, where every curve starts from
        without = next(rows[0]["mlm_loss_without"] for (name, _), rows in curves.items() if name == lang)
        color = LANG_COLORS[langs.index(lang) % len(LANG_COLORS)]
        fig.add_hline(y=without, line_dash="dot", line_color=color, opacity=0.6, row=1, col=1)
    gains = [r["test"]["gain"] for rows in curves.values() for r in rows]
    fig.add_hline(y=0, line_dash="dot", line_color="#6c757d", row=1, col=2)
    fig.update_yaxes(range=[min(0, *gains) - 1, max(0, *gains) + 1], row=1, col=2)  # 0 (keep) always in view
    fig.update_xaxes(title_text="sequences trained on (steps × batch, log scale)", type="log")
    fig.update_yaxes(title_text="nats per masked token (dotted: no adapter)", row=1, col=1)
    fig.update_yaxes(title_text="points (0 = English adapter kept)", zeroline=True, row=1, col=2)
    fig.update_layout(
        title="How much training does a language adapter need?",
        height=420,
        legend=dict(orientation="h", y=-0.3),
        margin=dict(l=50, r=10, t=70, b=40),
    )
    return fig


def table_rows(summary: list[dict]) -> list[list]:
    return [
        [
            system_name(s["system"]),
            s["source"],
            s["target"],
            s["mean"],
            s["std"] if s["n"] > 1 else None,  # one run has no spread
            s["n"],
            s["examples"],
            s["trainable_parameters"],
            s["origin"],
        ]
        for s in summary
    ]


TABLE_HEADERS = [
    "system", "source", "target", "mean (0-100)", "std", "seeds", "test examples", "trainable parameters", "from",
]  # fmt: skip
