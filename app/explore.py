"""Explore: run a MAD-X stack on your own text (NER) or question (QA), compare stacks, see what the stack costs."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, replace
from pathlib import Path

import gradio as gr

from madx_core.adapters import Stack
from madx_core.evaluation import Entity, answer_question, tag_text
from madx_core.model import AdapterModel

from .state import INFERENCE_WORKERS, NO_ADAPTER, AppState, clean_text, friendly, text_chunks

EXAMPLES_FILE = Path(__file__).resolve().parent.parent / "assets" / "examples.json"
ENTITY_COLORS = {"PER": "#ffb4a2", "LOC": "#a8dadc", "ORG": "#cdb4db", "DATE": "#ffe08a", "MISC": "#b5e48c"}
ANSWER_COLOR = "#ffd166"
LOW_QA_SCORE = 0.2  # below this the best span is more likely a guess than an answer


# ----------------------------------------------------------------------------------------------------------
# Inference (the callbacks below only check input and format output)


def ner(state: AppState, text: str, backbone: str, lang: str, task_adapter: str) -> tuple[dict, list[dict]]:
    """Entities in `text` with the stack (lang, task_adapter).

    A long text is tagged chunk by chunk in the long lane (`Lanes`); `tag_text` windows each chunk.
    """
    text = clean_text(text)
    model, tokenizer, stack, head = state.registry.resolve(backbone, lang, task_adapter or "ner", "ner")

    def tag(piece: tuple[int, int]) -> list[Entity]:
        start, end = piece
        found = tag_text(model, tokenizer, text[start:end], stack, head)
        return [replace(e, start=e.start + start, end=e.end + start) for e in found]

    # A long text is tagged chunk by chunk in the long lane, so it never holds up one-sentence requests.
    entities = [e for part in state.lanes.run(len(text), text_chunks(text), tag) for e in part]
    return {"text": text, "entities": entities}, [asdict(e) for e in entities]


def qa(state: AppState, question: str, context: str, backbone: str, lang: str, task_adapter: str) -> tuple[dict, dict]:
    """The best answer span in `context` (windowed when long) with the stack (lang, task_adapter)."""
    question = clean_text(question, "question", limit=2_000)
    context = clean_text(context, "context")
    model, tokenizer, stack, head = state.registry.resolve(backbone, lang, task_adapter or "qa", "qa")
    (pred,) = state.lanes.run(
        len(context), [context], lambda c: answer_question(model, tokenizer, question, c, stack, head)
    )
    start = int(getattr(pred, "start", -1))
    end = int(getattr(pred, "end", start + len(pred.text) if start >= 0 else -1))
    score = float(pred.score)
    if not pred.text.strip():
        note = "The model found no answer span in this context."
    elif score < LOW_QA_SCORE:
        note = f"Low confidence ({score:.2f}): the context may not contain the answer; this is the model's best guess."
    else:
        note = f"Answer found with confidence {score:.2f}."
    answer = {"answer": pred.text, "score": round(score, 4), "start": start, "end": end, "note": note}
    return {"text": context, "answer": answer}, answer


def compare(
    state: AppState, text: str, backbone: str, source: str, target: str, task_adapter: str, context: str = ""
) -> list[dict]:
    """The same input through three stacks: the task adapter alone, on the source adapter, on the target adapter."""
    entry = state.registry.get(task_adapter or "ner", "task")
    runs = []
    for title, lang in (
        ("(a) no language adapter", NO_ADAPTER),
        (f"(b) source adapter: {source}", source),
        (f"(c) target adapter: {target}", target),
    ):
        if entry.task == "ner":
            shown, entities = ner(state, text, backbone, lang, entry.name)
            runs.append({"title": title, "stack": _stack_names(lang, entry.name), "shown": shown, "result": entities})
        else:
            shown, answer = qa(state, text, context, backbone, lang, entry.name)
            runs.append({"title": title, "stack": _stack_names(lang, entry.name), "shown": shown, "result": answer})
    return runs


def _stack_names(lang: str, task: str) -> list[str]:
    return [task] if not lang or lang == NO_ADAPTER else [lang, task]


# ----------------------------------------------------------------------------------------------------------
# Display: highlighted text, the stack diagram, the parameter budget


def _score_colors() -> dict[str, str]:
    # Labels carry the confidence ("PER 0.97"); a static map from every such label to its type's colour keeps the
    # API's output a plain value (no per-request component update) while the UI colours by entity type.
    colors = {f"{label} {i / 100:.2f}": color for label, color in ENTITY_COLORS.items() for i in range(101)}
    colors.update({f"answer {i / 100:.2f}": ANSWER_COLOR for i in range(101)})
    return colors


SCORE_COLORS = _score_colors()


def entity_highlight(shown: dict) -> dict:
    """Entities as highlighted spans labelled with type and confidence, e.g. 'PER 0.97'."""
    spans = [{"entity": f"{e.label} {e.score:.2f}", "start": e.start, "end": e.end} for e in shown["entities"]]
    return {"text": shown["text"], "entities": spans}


def answer_highlight(shown: dict) -> dict:
    a = shown["answer"]
    spans = []
    if a["start"] >= 0 and a["end"] > a["start"]:
        spans = [{"entity": f"answer {a['score']:.2f}", "start": a["start"], "end": a["end"]}]
    return {"text": shown["text"], "entities": spans}


def _fmt(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} K" if n >= 1e3 else str(n)


def _percent(p: float) -> str:
    return f"{p:.2f}%" if p >= 0.1 or p == 0 else f"{p:.3f}%"


def budget_rows(model: AdapterModel, stack: Stack | None, head: str | None) -> list[dict]:
    """Parameters of the backbone and of each part of the active stack, and their share of the backbone."""
    b = model.parameter_budget()
    base = b["backbone"]
    rows = [{"part": "backbone (frozen, shared by all languages and tasks)", "parameters": base}]
    added = 0
    for name in stack or []:
        kind = "task" if name == head else "language"
        inv = b["invertible"].get(name, 0)
        rows.append(
            {
                "part": f"{kind} adapter '{name}', all layers" + (" + invertible" if inv else ""),
                "parameters": b["adapters"][name],
            }
        )
        added += b["adapters"][name]
        if inv:
            rows.append({"part": "↳ of which the invertible adapter (NICE)", "parameters": inv})
    if head is not None and head in b["heads"]:
        rows.append({"part": f"prediction head '{head}'", "parameters": b["heads"][head]})
        added += b["heads"][head]
    rows.append({"part": "added by this stack", "parameters": added})
    for r in rows:
        r["percent_of_backbone"] = round(100 * r["parameters"] / base, 3)
    return rows


def stack_html(state: AppState, backbone: str, lang: str, task_adapter: str) -> str:
    """The active stack drawn bottom-up like the paper's figure, plus its parameter budget."""
    try:
        model, _, stack, head = state.registry.resolve(backbone, lang, task_adapter, None)
    except Exception as e:  # shown in place of the diagram; the user fixes the dropdown
        return f"<div style='color:#b00020'>Cannot build this stack: {html.escape(str(e))}</div>"
    names = list(stack or [])
    lang_name = names[0] if len(names) == 2 else None
    task_name = names[-1] if names else None
    entry = state.registry.entries.get(task_name or "")
    budget = {r["part"]: r for r in budget_rows(model, stack, head)}
    n_layers = model.num_layers

    def box(text: str, color: str, note: str = "") -> str:
        note = f"<div style='font-size:0.8em;opacity:0.75'>{note}</div>" if note else ""
        return (
            f"<div style='background:{color};color:#1a1a1a;border-radius:8px;padding:6px 10px;margin:2px 0;"
            f"text-align:center;border:1px solid #0002'>{text}{note}</div>"
        )

    arrow = "<div style='text-align:center;line-height:1;opacity:0.6'>▲</div>"
    lang_adapter = model.adapters[lang_name] if lang_name else None
    inv = lang_adapter.invertible if lang_adapter is not None else None
    head_kind = "NER tagging" if entry and entry.task == "ner" else "QA start/end span"
    labels = len(entry.labels) if entry and entry.labels else None
    parts = [
        box(
            f"<b>head</b> '{html.escape(task_name or '')}': {head_kind}",
            "#9ecbff",
            f"{labels} labels" if labels else "",
        )
        if task_name
        else "",
        arrow if task_name else "",
        "<div style='border:2px dashed #888;border-radius:10px;padding:6px;margin:2px 0'>"
        f"<div style='text-align:center;font-size:0.85em'>× {n_layers} transformer layers (frozen)</div>"
        + (
            box(f"<b>task adapter</b> '{html.escape(task_name)}'", "#ffc58f", "trained on the source language")
            if task_name
            else ""
        )
        + (arrow if task_name and lang_name else "")
        + (
            box(f"<b>language adapter</b> '{html.escape(lang_name)}'", "#9be3a4", "swap it to change language")
            if lang_name
            else box("no language adapter (MAD-X –LAD)", "#eeeeee")
        )
        + arrow
        + box("multi-head attention → feed-forward", "#e2e2e2")
        + "</div>",
        arrow,
        box(
            f"<b>invertible adapter</b> (NICE) of '{html.escape(lang_name)}'"
            if inv is not None
            else "no invertible adapter",
            "#c3f0ca" if inv is not None else "#eeeeee",
            "inverted again before the masked-LM output layer" if inv is not None else "",
        ),
        arrow,
        box("embeddings (frozen)", "#e2e2e2"),
    ]
    table = "".join(
        f"<tr><td>{html.escape(r['part'])}</td><td style='text-align:right'>{r['parameters']:,}</td>"
        f"<td style='text-align:right'>{_fmt(r['parameters'])}</td>"
        f"<td style='text-align:right'>{_percent(r['percent_of_backbone'])}</td></tr>"
        for r in budget.values()
    )
    return (
        "<div style='display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start'>"
        f"<div style='flex:1;min-width:240px;max-width:360px'>{''.join(parts)}</div>"
        "<div style='flex:1;min-width:280px'><b>Parameter budget</b>"
        "<table style='width:100%;font-size:0.9em'><tr><th style='text-align:left'>part</th><th>parameters</th>"
        f"<th></th><th>% of backbone</th></tr>{table}</table>"
        "<p style='font-size:0.85em;opacity:0.8'>One backbone serves every language and task; a new language costs "
        "one language adapter, a new task one task adapter.</p></div></div>"
    )


# ----------------------------------------------------------------------------------------------------------
# Examples written for this project


def load_examples() -> dict:
    try:
        return json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"ner": [], "qa": []}


# ----------------------------------------------------------------------------------------------------------
# The tab


def build(state: AppState) -> dict:
    """Lay out the Explore tab and wire its events; returns the components other tabs refresh."""
    reg = state.registry
    examples = load_examples()
    default_lang = "en" if "en" in reg.entries else NO_ADAPTER
    default_target = next((c for c in ("sw", "de", "ha") if c in reg.entries), default_lang)

    gr.Markdown(
        "Pick a **language adapter** and a **task adapter**, and run them on top of the frozen multilingual "
        "backbone. The task adapters were trained on English data stacked on the English language adapter; MAD-X's "
        "zero-shot transfer is simply swapping in the language adapter of your text's language."
    )
    with gr.Row():
        backbone = gr.Dropdown(
            reg.backbone_choices(), value=reg.default_backbone, label="backbone", allow_custom_value=True, scale=1
        )
        lang = gr.Dropdown(
            [(NO_ADAPTER, NO_ADAPTER)], value=default_lang, label="language adapter", allow_custom_value=True, scale=2
        )
    with gr.Tabs():
        with gr.Tab("Named entities (NER)", id="ner"):
            with gr.Row():
                with gr.Column(scale=3):
                    ner_text = gr.Textbox(
                        label="text", lines=4, placeholder="Type a sentence in any language", elem_id="ner-text"
                    )
                    ex_lang = gr.Textbox(visible=False)
                    if examples.get("ner"):
                        gr.Examples(
                            [[e["text"], e["lang"]] for e in examples["ner"]],
                            inputs=[ner_text, ex_lang],
                            example_labels=[f"{e['lang']} · {e['text'][:48]}…" for e in examples["ner"]],
                            label="Examples (click one; its language adapter is selected if shipped)",
                            examples_per_page=16,
                        )
                with gr.Column(scale=1):
                    ner_task = gr.Dropdown([], value="ner", label="NER task adapter", allow_custom_value=True)
                    ner_btn = gr.Button("Find entities", variant="primary", elem_id="ner-run")
                    ner_cmp_btn = gr.Button("Compare stacks")
            ner_out = gr.HighlightedText(
                label="entities (type and confidence)", color_map=SCORE_COLORS, elem_id="ner-out"
            )
            with gr.Accordion("entities as data", open=False):
                ner_json = gr.JSON(label="entities")
            ner_ctx = gr.Textbox(visible=False, value="")  # /compare's context input; NER has none
        with gr.Tab("Question answering (QA)", id="qa"):
            with gr.Row():
                with gr.Column(scale=3):
                    question = gr.Textbox(label="question", lines=1)
                    context = gr.Textbox(label="context", lines=6)
                    qa_ex_lang = gr.Textbox(visible=False)
                    if examples.get("qa"):
                        gr.Examples(
                            [[e["question"], e["context"], e["lang"]] for e in examples["qa"]],
                            inputs=[question, context, qa_ex_lang],
                            example_labels=[f"{e['lang']} · {e['question'][:48]}" for e in examples["qa"]],
                            label="Examples",
                            examples_per_page=16,
                        )
                with gr.Column(scale=1):
                    qa_task = gr.Dropdown([], value="qa", label="QA task adapter", allow_custom_value=True)
                    qa_btn = gr.Button("Answer", variant="primary")
                    qa_cmp_btn = gr.Button("Compare stacks")
            qa_out = gr.HighlightedText(label="answer in the context", color_map=SCORE_COLORS)
            qa_json = gr.JSON(label="answer")

    with gr.Accordion("Compare: (a) no language adapter, (b) source adapter, (c) target adapter", open=True):
        with gr.Row():
            source = gr.Dropdown([], value=default_lang, label="source language adapter (b)", allow_custom_value=True)
            target = gr.Dropdown([], value=default_target, label="target language adapter (c)", allow_custom_value=True)
        with gr.Row():
            cmp_outs = [
                gr.HighlightedText(label=t, color_map=SCORE_COLORS)
                for t in ("(a) no language adapter", "(b) source adapter", "(c) target adapter")
            ]
        cmp_summary = gr.Markdown()

    with gr.Accordion("The active stack and what it costs", open=True):
        diagram = gr.HTML()

    # --- callbacks: thin wrappers with the API's parameter names ------------------------------------------

    @friendly
    def run_ner(text: str, backbone: str, language_adapter: str, task_adapter: str):
        shown, entities = ner(state, text, backbone, language_adapter, task_adapter)
        return entity_highlight(shown), entities

    @friendly
    def run_qa(question: str, context: str, backbone: str, language_adapter: str, task_adapter: str):
        shown, answer = qa(state, question, context, backbone, language_adapter, task_adapter)
        return answer_highlight(shown), answer

    @friendly
    def run_compare(
        text: str, backbone: str, source_adapter: str, target_adapter: str, task_adapter: str, context: str = ""
    ):
        runs = compare(state, text, backbone, source_adapter, target_adapter, task_adapter, context)
        shown = [
            entity_highlight(r["shown"]) if "entities" in r["shown"] else answer_highlight(r["shown"]) for r in runs
        ]
        return *shown, _compare_summary(runs)

    def show_stack(backbone: str, language_adapter: str, task_adapter: str):
        return stack_html(state, backbone, language_adapter, task_adapter)

    def pick_example_lang(code: str):
        # Select the example's language adapter when one is shipped; otherwise keep the user's choice.
        if code and code in reg.entries and reg.entries[code].kind == "language":
            return code, code
        return gr.skip(), gr.skip()

    inference = dict(concurrency_limit=INFERENCE_WORKERS, concurrency_id="inference")
    ner_btn.click(run_ner, [ner_text, backbone, lang, ner_task], [ner_out, ner_json], api_name="ner", **inference)
    ner_text.submit(
        run_ner, [ner_text, backbone, lang, ner_task], [ner_out, ner_json], api_visibility="private", **inference
    )
    qa_btn.click(run_qa, [question, context, backbone, lang, qa_task], [qa_out, qa_json], api_name="qa", **inference)
    cmp_outputs = [*cmp_outs, cmp_summary]
    ner_cmp_btn.click(
        run_compare,
        [ner_text, backbone, source, target, ner_task, ner_ctx],
        cmp_outputs,
        api_name="compare",
        **inference,
    )
    qa_cmp_btn.click(
        run_compare,
        [question, backbone, source, target, qa_task, context],
        cmp_outputs,
        api_name="compare_qa",
        api_visibility="undocumented",
        **inference,
    )
    for trigger in (backbone.change, lang.change, ner_task.change):
        trigger(show_stack, [backbone, lang, ner_task], diagram, api_visibility="private", queue=False)
    qa_task.change(show_stack, [backbone, lang, qa_task], diagram, api_visibility="private", queue=False)
    ex_lang.change(pick_example_lang, ex_lang, [lang, target], api_visibility="private", queue=False)
    qa_ex_lang.change(pick_example_lang, qa_ex_lang, [lang, target], api_visibility="private", queue=False)

    return {
        "backbone": backbone,
        "lang": lang,
        "ner_task": ner_task,
        "qa_task": qa_task,
        "source": source,
        "target": target,
        "diagram": diagram,
        "show_stack": show_stack,
    }


def _compare_summary(runs: list[dict]) -> str:
    lines = ["| stack | result |", "| --- | --- |"]
    for r in runs:
        if isinstance(r["result"], list):
            found = ", ".join(f"{e['text']} ({e['label']} {e['score']:.2f})" for e in r["result"][:12]) or "no entities"
        else:
            found = f"“{r['result']['answer']}” (confidence {r['result']['score']:.2f})"
        lines.append(f"| {' → '.join(r['stack'])} | {found.replace('|', '/')} |")
    return "\n".join(lines)
