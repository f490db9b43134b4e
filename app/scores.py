"""Transfer scores: the shipped results and the app's own evaluations as charts, a table and a CSV."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from madx_core import data as D
from madx_core.evaluation import evaluate_ner, evaluate_qa
from madx_core.transfer import SYSTEM_NAMES as CORE_SYSTEM_NAMES
from madx_core.transfer import reading, zero_shot_means
from madx_core.transfer import summarise as core_summarise

from .display import backbone_choices
from .errors import friendly
from .inputs import check_language, shown, visitor_session
from .limits import MAX_EVAL_EXAMPLES
from .registry import NO_ADAPTER
from .state import AppState

SYSTEM_NAMES = {**CORE_SYSTEM_NAMES, "baseline": "baseline (full fine-tuning)"}
SYSTEM_COLORS = {
    "baseline": "#8d99ae",
    "mlm-trg": "#adb5bd",
    "madx-lad": "#f4a261",
    "madx-inv": "#2a9d8f",
    "madx-src": "#9c6644",
    "madx": "#264653",
}
# MasakhaNER names its folders with ISO 639-3 codes; adapters use 639-1 where it exists.
LANG_CODES = {"swa": "sw", "hau": "ha", "yor": "yo", "ibo": "ig", "amh": "am", "kin": "rw", "lug": "lg", "wol": "wo"}


def lang_code(code: str | None) -> str:
    return LANG_CODES.get(code or "", code or "")


def system_name(system: str) -> str:
    return SYSTEM_NAMES.get(system, system)


def _order(systems: set[str]) -> list[str]:
    known = [s for s in SYSTEM_NAMES if s in systems]
    return known + sorted(systems - set(known))


# ----------------------------------------------------------------------------------------------------------
# Aggregation and charts


def percent(row: dict) -> float:
    """A score on the 0-100 scale: results.json keeps NER entity F1 as a fraction (0-1), QA scores in percent."""
    value = float(row["value"])
    return value * 100 if row.get("task") == "ner" and value <= 1.0 else value


def summarise(rows: list[dict], task: str, metric: str) -> list[dict]:
    """Mean, spread and count over seeds for every (system, source, target) of one task and metric."""
    # Trainable parameters depend on the system and task, not the metric: some result files record them on one
    # metric's row only (e.g. QA's "em"), so they are pooled per system.
    pooled: dict[str, list[int]] = {}
    for r in rows:
        if r.get("task", task) == task and r.get("trainable_parameters"):
            pooled.setdefault(r["system"], []).append(int(r["trainable_parameters"]))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("task", task) == task and r.get("metric") == metric:
            key = (r["system"], lang_code(r.get("source") or "en"), lang_code(r["target"]))
            groups.setdefault(key, []).append(r)
    out = []
    for (system, source, target), rs in sorted(groups.items()):
        values = [percent(r) for r in rs]
        examples = [int(r["examples"]) for r in rs if str(r.get("examples") or "").isdigit()]
        params = [r["trainable_parameters"] for r in rs if r.get("trainable_parameters")] or pooled.get(system)
        out.append(
            {
                "system": system,
                "source": source,
                "target": target,
                "task": task,
                "metric": metric,
                "mean": round(statistics.fmean(values), 2),
                "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,  # sample std, as results.json
                "n": len(values),
                "trainable_parameters": int(statistics.fmean(params)) if params else None,
                "origin": rs[0].get("origin", ""),
                "examples": max(examples) if examples else None,
            }
        )
    return out


def _empty(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _metric_name(task: str, metric: str) -> str:
    return "entity F1 (0-100)" if task == "ner" else f"{metric.upper()} (0-100)"


def bars_figure(summary: list[dict], metric: str, task: str = "ner") -> go.Figure:
    """Grouped bars per target language: one bar per system; error bars (sample std) only where there are seeds."""
    fig = go.Figure()
    if not summary:
        return _empty(fig, "no results for this task and metric yet")
    targets = sorted({s["target"] for s in summary})
    for system in _order({s["system"] for s in summary}):
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
        title=f"zero-shot transfer per target language<br>({_metric_name(task, metric)})",
        xaxis_title="target language",
        yaxis=dict(title=_metric_name(task, metric), range=[0, 100]),
        height=400,
        legend=dict(orientation="h", y=-0.25),
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
    for system in _order({s["system"] for s in summary}):
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
        title=f"mean zero-shot {metric.upper()} vs<br>trainable parameters",
        xaxis=dict(title="trainable parameters (log scale)", type="log", tickformat="~s", nticks=4),
        yaxis_title=_metric_name(task, metric),
        showlegend=True,
        legend=dict(orientation="h", y=-0.3),
        height=400,
        margin=dict(l=50, r=10, t=50, b=40),
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


# ----------------------------------------------------------------------------------------------------------
# "Evaluate this adapter on ...": data sets found in MADX_DATA_DIR, or an uploaded file


def data_dir() -> Path | None:
    """MADX_DATA_DIR, else `../shared/data` beside the repository (where the tests and .ci/run find it)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(os.environ.get("MADX_DATA_DIR") or default)
    return path if path.is_dir() else None


def dataset_choices() -> dict[str, tuple[str, str, Path]]:
    """Label -> (task, language, path) for the labelled test sets that are present."""
    root = data_dir()
    found: dict[str, tuple[str, str, Path]] = {}
    if root is None:
        return found
    for d in sorted((root / "ner").glob("*/")):
        if (d / "test.txt").is_file():
            found[f"NER · {lang_code(d.name)} · {d.name}/test.txt"] = ("ner", lang_code(d.name), d / "test.txt")
    for f in sorted((root / "qa").glob("xquad.*.json")):
        code = f.name.split(".")[1]
        found[f"QA · {code} · XQuAD held-out half"] = ("qa", code, f)
    return found


def load_eval_data(task: str, path: Path, limit: int) -> list:
    if task == "ner":
        return D.read_conll(path)[:limit]
    examples = D.read_squad(path)
    if path.name.startswith("xquad."):  # the articles the shipped QA adapters never saw (as in transfer.py)
        _, examples = D.split_by_article(examples, eval_fraction=0.5, seed=0)
    return examples[:limit]


def evaluate(
    state: AppState,
    lang: str,
    task_adapter: str,
    dataset: str,
    file: str | None,
    file_lang: str,
    backbone: str,
    max_examples: float,
    visitor: str | None = None,
) -> list[dict]:
    """Score the stack (lang, task_adapter) on a data set; the rows are kept for this visitor's session only."""
    limit = int(max_examples or 100)
    if not 1 <= limit <= MAX_EVAL_EXAMPLES:
        raise ValueError(f"max examples must be between 1 and {MAX_EVAL_EXAMPLES}")
    backbone = state.registry.check_backbone(backbone)
    entry = state.registry.get(task_adapter, "task")
    if file:
        path = Path(file)
        task, target = entry.task, check_language(file_lang)
    else:
        choices = dataset_choices()
        if dataset not in choices:
            known = "; ".join(choices) or "none here (set MADX_DATA_DIR), so upload a file"
            raise ValueError(f"unknown data set {shown(dataset)}; available: {known}")
        task, target, path = choices[dataset]
    if task != entry.task:
        raise ValueError(f"task adapter {entry.name!r} does {entry.task.upper()}, the data set is {task.upper()}")
    examples = load_eval_data(task, path, limit)
    if not examples:
        raise ValueError(f"no {task.upper()} examples in {path.name}")
    model, tokenizer, stack, head = state.registry.resolve(backbone, lang, entry.name, task)
    if task == "ner":
        keep = {label[2:] for label in model.heads[head].config.label2id if label != "O"}
        scores, _ = evaluate_ner(model, tokenizer, D.restrict_labels(examples, keep), stack, head)
        metrics = {"f1": scores["f1"]}
    else:
        scores, _ = evaluate_qa(model, tokenizer, examples, stack, head, lang=target)
        metrics = {"f1": scores["f1"], "em": scores["exact_match"]}
    budget = model.parameter_budget()
    params = budget["adapters"][entry.name] + budget["heads"].get(head, 0)
    # The example count is part of the system's name, so a score on a handful of sentences says so in every chart.
    system = f"app: {' + '.join(stack)} ({len(examples)} examples)"
    rows = [
        {
            "system": system,
            "source": lang_code(entry.lang or "en"),
            "target": lang_code(target),
            "task": task,
            "metric": m,
            "value": round(float(v), 4),
            "seed": None,
            "examples": len(examples),
            "trainable_parameters": params,
        }
        for m, v in metrics.items()
    ]
    state.results.add(rows, visitor)
    return rows


def system_choices(state: AppState, task: str) -> list[tuple[str, str]]:
    """(readable name, key) of the systems that have shipped rows for this task: no choice without data."""
    present = {r["system"] for r in state.results.rows() if r.get("task", task) == task}
    return [(system_name(x), x) for x in _order(present)] or [(system_name("madx"), "madx")]


def shipped_reading(state: AppState) -> str:
    """What the shipped results say about swapping adapters, in sentences generated from the results themselves."""
    shipped = [r for r in state.results.rows() if r.get("origin") == "shipped"]
    lines = reading(core_summarise(shipped)) if shipped else []
    if not lines:
        return ""
    body = "\n".join(f"- {line}" for line in lines)
    return (
        "**What these results show** (generated from `assets/results.json`; one seed where n = 1, so differences of "
        "one or two points may be noise):\n" + body + "\n\nIn the paper, swapping in the target language's adapter "
        "is what makes MAD-X transfer better; on this small offline backbone it does not, and the README's Results "
        "section lists what was tried."
    )


def _shipped_summary(state: AppState) -> list[dict]:
    shipped = [r for r in state.results.rows() if r.get("origin") == "shipped"]
    return core_summarise(shipped) if shipped else []


def _results_config(state: AppState) -> dict:
    try:
        data = json.loads(state.results.shipped_file.read_text(encoding="utf-8"))
        config = (data.get("meta") or {}).get("config") or {}
        return config if isinstance(config, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def swap_verdict(state: AppState) -> str:
    """One sentence for the app's intro: does swapping in the target adapter help in the shipped results?"""
    summary = _shipped_summary(state)
    helps, hurts = [], []
    for task in ("ner", "qa"):
        systems = zero_shot_means(summary, task, "f1").get("systems", {}) if summary else {}
        others = {k: v["mean"] for k, v in systems.items() if k in ("madx-src", "madx-lad")}
        if "madx" not in systems or not others:
            continue
        (hurts if max(others.values()) >= systems["madx"]["mean"] else helps).append(task.upper())
    if hurts and not helps:
        return (
            f"**On this small offline backbone it does not work as the paper reports**: in the shipped results "
            f"({' and '.join(hurts)}), swapping in the target language's adapter transfers no better than keeping "
            "the English one or using none. *Transfer scores* shows the numbers."
        )
    if hurts:
        return (
            f"In the shipped results swapping helps for {' and '.join(helps)} but not for {' and '.join(hurts)}; "
            "*Transfer scores* shows the numbers."
        )
    if helps:
        return f"In the shipped results swapping helps ({' and '.join(helps)}); *Transfer scores* shows the numbers."
    return ""


def task_reading(state: AppState, task: str) -> str:
    """What the shipped results say for one task, next to its charts: the verdict, per language, what is missing."""
    summary = _shipped_summary(state)
    label = "NER entity F1" if task == "ner" else "QA F1"
    lines = [line for line in (reading(summary) if summary else []) if line.startswith(label)]
    out = [f"**Reading ({task.upper()}, generated from `assets/results.json`)**"]
    out += [f"- {line}" for line in lines] or ["- No shipped MAD-X results for this task."]
    rows = [r for r in summary if r["task"] == task and r["metric"] == "f1" and r["target"] != r["source"]]
    by = {(r["system"], r["target"]): r["mean"] * (100 if task == "ner" else 1) for r in rows}
    targets = sorted({t for _, t in by})
    if targets and any(("madx-src", t) in by for t in targets):
        wins = [t for t in targets if ("madx", t) in by and ("madx-src", t) in by and by["madx", t] > by["madx-src", t]]
        per = ", ".join(
            f"{t} {by['madx', t] - by['madx-src', t]:+.1f}"
            for t in targets
            if ("madx", t) in by and ("madx-src", t) in by
        )
        lines_per = f"- Per language, swapping minus keeping the English adapter: {per} points"
        out.append(lines_per + f" (swapping wins for {len(wins)} of {len(targets)}).")
    seeds = {r["n"] for r in rows}
    if seeds and max(seeds) == 1:
        out.append("- One training run per system (no error bars): differences of one or two points may be noise.")
    config = _results_config(state)
    task_cfg = (config.get("tasks") or {}).get(task) or {}
    wanted = task_cfg.get("systems") or config.get("systems") or []
    present = {r["system"] for r in summary if r["task"] == task}
    missing = [system_name(x) for x in wanted if x not in present]
    if missing:
        out.append(f"- Configured but not in these results (not run): {', '.join(missing)}.")
    if "baseline" in present:
        epochs = task_cfg.get("full_epochs")
        out.append(
            "- ⚠️ The full fine-tuning baseline was trained briefly"
            + (f" ({epochs} epochs)" if epochs else "")
            + " on a small budget: read it as a rough reference, not a converged baseline."
        )
    return "\n".join(out)


def training_line(state: AppState) -> str:
    """One sentence: how much the shipped adapters were trained (from results.json's configuration)."""
    config = _results_config(state)
    la, tasks = config.get("lang_adapter") or {}, config.get("tasks") or {}
    parts = []
    if la.get("steps"):
        parts.append(
            f"language adapters {la['steps']} steps of {la.get('batch_size')} lines (the paper: 250,000 of 64)"
        )
    for task in ("ner", "qa"):
        if (tasks.get(task) or {}).get("epochs"):
            parts.append(f"{task.upper()} task adapters {tasks[task]['epochs']:g} epoch(s) of English data")
    return ("The shipped adapters are small: " + "; ".join(parts) + ".") if parts else ""


def adapters_summary(state: AppState) -> str:
    """Which adapters ship and how much each was trained, from the configuration recorded in results.json."""
    config = _results_config(state)
    la = config.get("lang_adapter") or {}
    tasks = config.get("tasks") or {}
    reg = state.registry
    langs = sorted(e.name for e in reg.language_adapters() if e.origin == "shipped")
    noinv = sorted(e.name for e in reg.language_adapters() if e.origin == "shipped -INV")
    lines = []
    if la:
        lines.append(
            f"- **Language adapters** ({', '.join(langs) or 'none'}): masked-LM training, {la.get('steps')} steps of "
            f"{la.get('batch_size')} lines (≤ {la.get('max_length')} tokens) at learning rate {la.get('lr')}, "
            f"reduction factor {la.get('reduction_factor')}, with an invertible NICE adapter. The paper trains "
            "250,000 steps of 64: these are small, teaching-sized adapters."
        )
    if noinv:
        lines.append(f"- **–INV language adapters** ({', '.join(noinv)}): the same without the invertible adapter.")
    summary = _shipped_summary(state)
    english = {
        (r["task"], r["system"]): r["mean"] * (100 if r["task"] == "ner" else 1)
        for r in summary
        if r["target"] == r["source"] and r["metric"] == "f1"
    }
    for task, data in (("ner", "CoNLL-2003 English train"), ("qa", "SQuAD train (English)")):
        cfg = tasks.get(task) or {}
        if not cfg:
            continue
        names = [e.name for e in reg.task_adapters(task) if e.origin == "shipped"]
        scores = ", ".join(
            f"{name} {english[task, system]:.1f}"
            for name, system in ((task, "madx"), (f"{task}_lad", "madx-lad"))
            if name in names and (task, system) in english
        )
        lines.append(
            f"- **{task.upper()} task adapters** ({', '.join(names)}): {cfg.get('epochs')} epoch(s) of {data}, "
            f"batches of {cfg.get('batch_size')} at learning rate {cfg.get('lr')}, reduction factor 16. "
            f"`{task}` was trained on top of the English language adapter (MAD-X), `{task}_lad` with no language "
            "adapter (MAD-X –LAD)." + (f" English test F1 (0-100): {scores}." if scores else "")
        )
    return "\n".join(lines) or "The shipped results record no training configuration."


# ----------------------------------------------------------------------------------------------------------
# The tab


def build(state: AppState) -> dict:
    reg = state.registry
    gr.Markdown(
        "Zero-shot cross-lingual transfer: a task adapter trained on the **source** language (English) is "
        "evaluated on each **target** language. *MAD-X (target adapter swapped in)* puts the target language's "
        "adapter under the task adapter; *MAD-X, source adapter kept* runs the same task adapter on the English "
        "adapter; *MAD-X –LAD* is a task adapter trained with no language adapter; *–INV* drops the invertible "
        "adapters; *baseline* fine-tunes the whole backbone. Shipped results come from `assets/results.json`; "
        "evaluations you run below are added as `app: …` systems with their example count, for you only (this "
        "browser session)."
    )
    with gr.Accordion("What all these results show", open=False):
        gr.Markdown(shipped_reading(state), elem_id="shipped-reading")
    with gr.Row():
        task = gr.Radio([("NER", "ner"), ("QA", "qa")], value="ner", label="task", min_width=120)
        metric = gr.Radio([("entity F1", "f1")], value="f1", label="metric", min_width=120)
        heat_system = gr.Dropdown(
            system_choices(state, "ner"), value="madx", label="heat map system", allow_custom_value=True, min_width=160
        )
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            bars = gr.Plot(label="per target language", elem_id="bars-plot")
        with gr.Column(scale=2, min_width=260):
            reading_md = gr.Markdown(task_reading(state, "ner"), elem_id="task-reading")
    with gr.Row():
        heat = gr.Plot(label="source × target", min_width=280)
        params = gr.Plot(label="score vs trainable parameters", min_width=280)
    table = gr.Dataframe(
        headers=TABLE_HEADERS,
        label="results (mean over seeds; scores 0-100)",
        interactive=False,
        wrap=True,
        elem_id="results-table",
    )
    csv_btn = gr.DownloadButton("Download all results (CSV)")

    with gr.Accordion("Evaluate an adapter stack on labelled data", open=True):
        datasets = list(dataset_choices())
        with gr.Row():
            ev_lang = gr.Dropdown(
                [], value="en" if "en" in reg.entries else NO_ADAPTER, label="language adapter", allow_custom_value=True
            )
            ev_task = gr.Dropdown([], value="ner", label="task adapter", allow_custom_value=True)
            ev_data = gr.Dropdown(
                datasets, value=datasets[0] if datasets else None, label="data set", allow_custom_value=True
            )
            ev_max = gr.Slider(1, MAX_EVAL_EXAMPLES, value=100, step=1, label="max examples")
        with gr.Row():
            ev_file = gr.File(
                label="or upload test data (CoNLL for NER, SQuAD JSON for QA)", file_types=[".txt", ".conll", ".json"]
            )
            ev_file_lang = gr.Textbox(label="language of the uploaded data", value="", max_lines=1)
            ev_backbone = gr.Dropdown(
                backbone_choices(state), value=reg.default_backbone, label="backbone", allow_custom_value=True
            )
        ev_btn = gr.Button("Evaluate this stack", variant="primary")
        ev_out = gr.JSON(label="scores")

    def charts(task: str = "ner", metric: str = "f1", heatmap_system: str = "madx", visitor: str | None = None):
        if task == "ner" and metric == "em":
            metric = "f1"  # NER has entity F1 only (the metric choice offers F1 alone for NER)
        summary = summarise(state.results.rows(visitor), task, metric)
        csv_path = state.results.csv(visitor)
        return (
            bars_figure(summary, metric, task),
            heatmap_figure(summary, metric, heatmap_system, task),
            params_figure(summary, metric, task),
            table_rows(summary),
            str(csv_path),
        )

    @friendly
    def scores(task: str = "ner", metric: str = "f1", heatmap_system: str = "madx", request: gr.Request = None):
        return charts(task, metric, heatmap_system, visitor_session(request))

    @friendly
    def run_evaluation(
        language_adapter: str,
        task_adapter: str,
        dataset: str,
        file: str | None,
        file_language: str,
        backbone: str,
        max_examples: float,
        task: str,
        metric: str,
        heatmap_system: str,
        request: gr.Request = None,
    ):
        visitor = visitor_session(request)
        rows = evaluate(
            state, language_adapter, task_adapter, dataset, file, file_language, backbone, max_examples, visitor
        )
        return rows, *charts(rows[0]["task"], metric if rows[0]["task"] == "qa" else "f1", heatmap_system, visitor)

    chart_outputs = [bars, heat, params, table, csv_btn]

    def redraw(task: str, metric: str, heatmap_system: str, request: gr.Request):
        return scores(task, metric, heatmap_system, request)

    def switch_task(task: str, heatmap_system: str):
        choices = system_choices(state, task)
        keep = heatmap_system if heatmap_system in [v for _, v in choices] else "madx"
        metrics = [("entity F1", "f1")] if task == "ner" else [("F1", "f1"), ("exact match (EM)", "em")]
        return (
            gr.Radio(choices=metrics, value="f1"),
            gr.Dropdown(choices=choices, value=keep),
            task_reading(state, task),
        )

    task.change(
        switch_task, [task, heat_system], [metric, heat_system, reading_md], api_visibility="private", queue=False
    ).then(redraw, [task, metric, heat_system], chart_outputs, api_visibility="private")
    for trigger in (metric.input, heat_system.input):
        trigger(redraw, [task, metric, heat_system], chart_outputs, api_visibility="private")
    ev_btn.click(
        run_evaluation,
        [ev_lang, ev_task, ev_data, ev_file, ev_file_lang, ev_backbone, ev_max, task, metric, heat_system],
        [ev_out, *chart_outputs],
        api_name="evaluate",
        concurrency_limit=2,
        concurrency_id="evaluate",
    )
    return {
        "ev_lang": ev_lang,
        "ev_task": ev_task,
        "scores": scores,
        "chart_inputs": [task, metric, heat_system],
        "chart_outputs": chart_outputs,
    }
