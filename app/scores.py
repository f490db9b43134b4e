"""Transfer scores: the shipped results and the app's own evaluations as charts, a table and a CSV.

The charts are drawn in charts.py and the sentences about the shipped results written in readings.py; this module
aggregates the rows, runs "Evaluate this stack" and builds the tab.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import gradio as gr

from madx_core.results import held_out_split, mean_std
from madx_core.results import score as score_stack
from madx_core.tasks import TASKS, get_task

from .charts import (
    TABLE_HEADERS,
    bars_figure,
    curve_figure,
    heatmap_figure,
    metric_choices,
    order,
    params_figure,
    system_name,
    table_rows,
)
from .display import backbone_choices
from .errors import friendly
from .inputs import check_language, shown, visitor_session
from .limits import MAX_EVAL_EXAMPLES
from .readings import curve_reading, shipped_reading, task_reading
from .registry import NO_ADAPTER
from .state import AppState

# MasakhaNER names its folders with ISO 639-3 codes; adapters use 639-1 where it exists.
LANG_CODES = {"swa": "sw", "hau": "ha", "yor": "yo", "ibo": "ig", "amh": "am", "kin": "rw", "lug": "lg", "wol": "wo"}


def lang_code(code: str | None) -> str:
    return LANG_CODES.get(code or "", code or "")


# ----------------------------------------------------------------------------------------------------------
# Aggregation


def percent(row: dict) -> float:
    """A score on the 0-100 scale: results.json keeps NER entity F1 as a fraction (0-1), QA scores in percent."""
    value = float(row["value"])
    task = TASKS.get(row.get("task"))
    return value * task.scale if task is not None and value <= 1.0 else value


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
        mean, std = mean_std(values, digits=2)  # the sample std, as in results.json
        examples = [int(r["examples"]) for r in rs if str(r.get("examples") or "").isdigit()]
        params = [r["trainable_parameters"] for r in rs if r.get("trainable_parameters")] or pooled.get(system)
        out.append(
            {
                "system": system,
                "source": source,
                "target": target,
                "task": task,
                "metric": metric,
                "mean": mean,
                "std": std,
                "n": len(values),
                "trainable_parameters": int(statistics.fmean(params)) if params else None,
                "origin": rs[0].get("origin", ""),
                "examples": max(examples) if examples else None,
            }
        )
    return out


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
    examples = get_task(task).read(path)
    if path.name.startswith("xquad."):  # the articles the shipped QA adapters never saw (as in transfer.py)
        examples = held_out_split(examples, eval_fraction=0.5)[1]
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
    gold = get_task(task).gold_for_head(model, head, examples)  # NER: only the entity types the head knows
    metrics = score_stack(model, tokenizer, task, gold, stack, head, target)
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
    return [(system_name(x), x) for x in order(present)] or [(system_name("madx"), "madx")]


# ----------------------------------------------------------------------------------------------------------
# The tab


def build(state: AppState) -> dict:
    reg = state.registry
    gr.Markdown(
        "Zero-shot cross-lingual transfer: a task adapter trained on the **source** language (English) is "
        "evaluated on each **target** language. *MAD-X (target adapter swapped in)* puts the target language's "
        "adapter under the task adapter; *MAD-X, source adapter kept* runs the same task adapter on the English "
        "adapter; *MAD-X, anchored target adapter swapped in (variant)* is a variant beyond the paper: the same task "
        "adapter on target adapters that started from the English adapter and were kept near its layer outputs while "
        "they learned their language; *MAD-X –LAD* is a task adapter trained with no language adapter; *MAD-X –LAD, "
        "backbone-anchored target adapter swapped in (variant)*, a second variant, runs that task adapter on target "
        "adapters kept near the backbone's own layer outputs while they learned their language; *–INV* drops "
        "the invertible adapters; *baseline* fine-tunes the whole backbone. Shipped results come from "
        "`assets/results.json`; evaluations you run below are added as `app: …` systems with their example count, for "
        "you only (this browser session)."
    )
    with gr.Accordion("What all these results show", open=False):
        gr.Markdown(shipped_reading(state), elem_id="shipped-reading")
    with gr.Row():
        task = gr.Radio([(t.title, t.name) for t in TASKS.values()], value="ner", label="task", min_width=120)
        metric = gr.Radio(metric_choices("ner"), value="f1", label="metric", min_width=120)
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
    recipes = state.results.recipes()
    if recipes:  # the language-adapter learning curve, when the assets have one
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=280):
                gr.Plot(curve_figure(recipes), label="language-adapter learning curve", elem_id="curve-plot")
            with gr.Column(scale=2, min_width=260):
                gr.Markdown(curve_reading(recipes, state.results.recipes_task_adapters()), elem_id="curve-reading")
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
        if metric not in get_task(task).metrics:
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
        return rows, *charts(rows[0]["task"], metric, heatmap_system, visitor)  # charts() drops a metric NER lacks

    chart_outputs = [bars, heat, params, table, csv_btn]

    def redraw(task: str, metric: str, heatmap_system: str, request: gr.Request):
        return scores(task, metric, heatmap_system, request)

    def switch_task(task: str, heatmap_system: str):
        choices = system_choices(state, task)
        keep = heatmap_system if heatmap_system in [v for _, v in choices] else "madx"
        metrics = metric_choices(task)
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
