"""Transfer scores: the shipped results and the app's own evaluations as charts, a table and a CSV."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from madx_core import data as D
from madx_core.evaluation import evaluate_ner, evaluate_qa
from madx_core.transfer import SYSTEM_NAMES as CORE_SYSTEM_NAMES
from madx_core.transfer import reading
from madx_core.transfer import summarise as core_summarise

from .state import MAX_EVAL_EXAMPLES, NO_ADAPTER, AppState, check_language, friendly, shown, visitor_session

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
        values = [float(r["value"]) for r in rs]
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
            }
        )
    return out


def _empty(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def bars_figure(summary: list[dict], metric: str) -> go.Figure:
    """Grouped bars per target language: one bar per system (baseline, –LAD, –INV, MAD-X, app evaluations)."""
    fig = go.Figure()
    if not summary:
        return _empty(fig, "no results for this task and metric yet")
    targets = sorted({s["target"] for s in summary})
    for system in _order({s["system"] for s in summary}):
        by_target = {s["target"]: s for s in summary if s["system"] == system}
        fig.add_trace(
            go.Bar(
                name=system_name(system),
                x=targets,
                y=[by_target[t]["mean"] if t in by_target else None for t in targets],
                error_y=dict(type="data", array=[by_target[t]["std"] if t in by_target else 0 for t in targets]),
                marker_color=SYSTEM_COLORS.get(system),
            )
        )
    fig.update_layout(
        barmode="group",
        title=f"zero-shot transfer per target language ({metric.upper()})",
        xaxis_title="target language",
        yaxis_title=metric.upper(),
        height=380,
        legend=dict(orientation="h", y=-0.25),
        margin=dict(l=50, r=20, t=50, b=40),
    )
    return fig


def heatmap_figure(summary: list[dict], metric: str, system: str) -> go.Figure:
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
            colorscale="Viridis",
            text=[[f"{v:.1f}" if v is not None else "" for v in row] for row in z],
            texttemplate="%{text}",
            colorbar=dict(title=metric.upper()),
        )
    )
    fig.update_layout(
        title=f"{system_name(system)}: source × target ({metric.upper()})",
        xaxis_title="target language",
        yaxis_title="source language",
        height=320,
        margin=dict(l=50, r=20, t=50, b=40),
    )
    return fig


def params_figure(summary: list[dict], metric: str) -> go.Figure:
    """Mean score over target languages against trainable parameters, one point per system."""
    fig = go.Figure()
    points = []
    for system in _order({s["system"] for s in summary}):
        rows = [s for s in summary if s["system"] == system and s["trainable_parameters"]]
        if rows:
            params = statistics.fmean(r["trainable_parameters"] for r in rows)
            points.append((system, params, statistics.fmean(r["mean"] for r in rows), len(rows)))
    if not points:
        return _empty(fig, "no trainable-parameter counts in these results")
    for system, params, score, n in points:
        fig.add_trace(
            go.Scatter(
                x=[params],
                y=[score],
                mode="markers+text",
                text=[system_name(system)],
                textposition="top center",
                marker=dict(size=14, color=SYSTEM_COLORS.get(system)),
                name=system_name(system),
                hovertemplate=f"{system_name(system)}<br>%{{x:,.0f}} trainable parameters<br>"
                f"mean {metric.upper()} %{{y:.1f}} over {n} targets<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"mean {metric.upper()} over targets vs trainable parameters per task",
        xaxis=dict(title="trainable parameters (log scale)", type="log"),
        yaxis_title=metric.upper(),
        showlegend=False,
        height=360,
        margin=dict(l=50, r=20, t=50, b=40),
    )
    return fig


def table_rows(summary: list[dict]) -> list[list]:
    return [
        [
            system_name(s["system"]),
            s["source"],
            s["target"],
            s["mean"],
            s["std"],
            s["n"],
            s["trainable_parameters"],
            s["origin"],
        ]
        for s in summary
    ]


TABLE_HEADERS = ["system", "source", "target", "mean", "std", "seeds", "trainable parameters", "from"]


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
    gr.Markdown(shipped_reading(state))
    with gr.Row():
        task = gr.Radio(["ner", "qa"], value="ner", label="task")
        metric = gr.Radio(["f1", "em"], value="f1", label="metric (EM: QA only)")
        heat_system = gr.Dropdown(list(SYSTEM_NAMES), value="madx", label="heat map system", allow_custom_value=True)
    bars = gr.Plot(label="per target language")
    with gr.Row():
        heat = gr.Plot(label="source × target")
        params = gr.Plot(label="score vs trainable parameters")
    table = gr.Dataframe(headers=TABLE_HEADERS, label="results (mean over seeds)", interactive=False, wrap=True)
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
                reg.backbone_choices(), value=reg.default_backbone, label="backbone", allow_custom_value=True
            )
        ev_btn = gr.Button("Evaluate this stack", variant="primary")
        ev_out = gr.JSON(label="scores")

    def charts(task: str = "ner", metric: str = "f1", heatmap_system: str = "madx", visitor: str | None = None):
        if task == "ner" and metric == "em":
            metric = "f1"  # NER has entity F1 only
        summary = summarise(state.results.rows(visitor), task, metric)
        csv_path = state.results.csv(visitor)
        return (
            bars_figure(summary, metric),
            heatmap_figure(summary, metric, heatmap_system),
            params_figure(summary, metric),
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

    for trigger in (task.change, metric.change, heat_system.change):
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
