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
# Dark enough that the white label text Gradio draws on them has a contrast of at least 4.5:1 (WCAG AA).
ENTITY_COLORS = {"PER": "#b3261e", "LOC": "#0b5c8a", "ORG": "#6a3d9a", "DATE": "#7a5200", "MISC": "#2f6b1f"}
ENTITY_NAMES = {"PER": "person", "LOC": "location", "ORG": "organisation", "DATE": "date", "MISC": "other name"}
ANSWER_COLOR = "#8a4500"
CALIBRATION_FILE = Path(__file__).resolve().parent.parent / "assets" / "qa_calibration.json"
LOW_QA_SCORE = 0.05  # fallback when assets/qa_calibration.json is missing
# Languages without a shipped adapter: the nearest shipped one, and why (an example says which it used).
NEAREST_ADAPTER = {
    "fr": ("es", "no French adapter ships; Spanish, the closest shipped language (both Romance), is used"),
    "hi": (NO_ADAPTER, "no Hindi adapter ships and none of the shipped languages is related, so no language adapter"),
}


# ----------------------------------------------------------------------------------------------------------
# Inference (the callbacks below only check input and format output)


def check_available(state: AppState, backbone: str | None) -> None:
    """Offline, a Hub backbone is listed (labelled unavailable) but refused at once with the reason."""
    from .state import offline

    name = state.registry.check_backbone(backbone)  # one of the app's own choices (never echoes anything else)
    if name != state.registry.default_backbone and offline():
        raise ValueError(
            f"backbone {name} needs the Hugging Face Hub, which is offline here; use {state.registry.default_backbone}"
        )


def task_for(state: AppState, lang: str | None, task_adapter: str) -> str:
    """The task adapter a request really runs.

    With no language adapter ("none") a MAD-X task adapter is replaced by its –LAD twin (`ner` -> `ner_lad`), the
    task adapter trained with no language adapter under it: that is the MAD-X –LAD system of the scores table.
    Running `ner` (trained on top of English) with English removed would be a different, untrained-for setting.
    """
    if (not lang or lang.strip() == NO_ADAPTER) and task_adapter:
        twin = state.registry.entries.get(f"{task_adapter}_lad")
        if twin is not None and twin.kind == "task":
            return twin.name
    return task_adapter


def ner(state: AppState, text: str, backbone: str, lang: str, task_adapter: str) -> tuple[dict, list[dict]]:
    """Entities in `text` with the stack (lang, task_adapter).

    A long text is tagged chunk by chunk in the long lane (`Lanes`); `tag_text` windows each chunk.
    """
    text = clean_text(text)
    check_available(state, backbone)
    task_adapter = task_for(state, lang, task_adapter or "ner")
    model, tokenizer, stack, head = state.registry.resolve(backbone, lang, task_adapter, "ner")

    def tag(piece: tuple[int, int]) -> list[Entity]:
        start, end = piece
        found = tag_text(model, tokenizer, text[start:end], stack, head)
        return [replace(e, start=e.start + start, end=e.end + start) for e in found]

    # A long text is tagged chunk by chunk in the long lane, so it never holds up one-sentence requests.
    entities = [e for part in state.lanes.run(len(text), text_chunks(text), tag) for e in part]
    return {"text": text, "entities": entities, "stack": list(stack or [])}, [asdict(e) for e in entities]


def qa_calibration() -> dict:
    """assets/qa_calibration.json (scripts/qa_calibration.py): how often answers of a given score were right."""
    try:
        data = json.loads(CALIBRATION_FILE.read_text(encoding="utf-8"))
        return data if isinstance(data.get("bins"), list) else {}
    except (OSError, ValueError, AttributeError):
        return {}


QA_CALIBRATION = qa_calibration()


def qa_note(score: float, text: str) -> str:
    """What a QA score means, in words: measured on XQuAD when the calibration ships, else a plain threshold."""
    if not text.strip():
        return "The model found no answer span in this context."
    for b in QA_CALIBRATION.get("bins", []):
        if b["from"] <= score < b["to"] or (score >= 1.0 and b["to"] >= 1.0):
            if not b.get("answers") or b.get("right") is None:
                break
            right = b["right"]
            level = "high" if right >= 0.7 else "medium" if right >= 0.45 else "low"
            return (
                f"Confidence {score:.2f} ({level}): on XQuAD, the shipped QA adapters' answers with a score between "
                f"{b['from']:.2f} and {b['to']:.2f} were right (token F1 ≥ 0.5) {100 * right:.0f}% of the time "
                f"({b['answers']} answers)." + (" The context may not contain the answer." if level == "low" else "")
            )
    if score < LOW_QA_SCORE:
        return f"Low confidence ({score:.2f}): the context may not contain the answer; this is the model's best guess."
    return f"Answer found with confidence {score:.2f}."


def qa(state: AppState, question: str, context: str, backbone: str, lang: str, task_adapter: str) -> tuple[dict, dict]:
    """The best answer span in `context` (windowed when long) with the stack (lang, task_adapter)."""
    question = clean_text(question, "question", limit=2_000)
    context = clean_text(context, "context")
    check_available(state, backbone)
    task_adapter = task_for(state, lang, task_adapter or "qa")
    model, tokenizer, stack, head = state.registry.resolve(backbone, lang, task_adapter, "qa")
    (pred,) = state.lanes.run(
        len(context), [context], lambda c: answer_question(model, tokenizer, question, c, stack, head)
    )
    start = int(getattr(pred, "start", -1))
    end = int(getattr(pred, "end", start + len(pred.text) if start >= 0 else -1))
    score = float(pred.score)
    note = qa_note(score, pred.text)
    answer = {"answer": pred.text, "score": round(score, 4), "start": start, "end": end, "note": note}
    return {"text": context, "answer": answer, "stack": list(stack or [])}, answer


def compare(
    state: AppState, text: str, backbone: str, source: str, target: str, task_adapter: str, context: str = ""
) -> list[dict]:
    """The same input through three stacks: –LAD (no language adapter), the source adapter, the target adapter."""
    entry = state.registry.get(task_adapter or "ner", "task")
    runs = []
    for title, lang in (
        ("(a) no language adapter (–LAD)", NO_ADAPTER),
        (f"(b) source adapter: {source}", source),
        (f"(c) target adapter: {target}", target),
    ):
        if entry.task == "ner":
            shown, result = ner(state, text, backbone, lang, entry.name)
        else:
            shown, result = qa(state, text, context, backbone, lang, entry.name)
        runs.append({"title": title, "stack": shown["stack"], "shown": shown, "result": result})
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
    task_adapter = task_for(state, lang, task_adapter)
    try:
        check_available(state, backbone)
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
    head_kind = "NER tagging" if entry and entry.task == "ner" else "QA answer start/end"
    lad = bool(task_name) and lang_name is None and task_name.endswith("_lad")
    trained = (
        "trained with no language adapter (MAD-X –LAD)"
        if lad
        else f"trained on the {entry.lang} language adapter"
        if entry and entry.lang
        else "trained on the source language"
    )
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
        + (box(f"<b>task adapter</b> '{html.escape(task_name)}'", "#ffc58f", html.escape(trained)) if task_name else "")
        + (arrow if task_name and lang_name else "")
        + (
            box(f"<b>language adapter</b> '{html.escape(lang_name)}'", "#9be3a4", "swap it to change language")
            if lang_name
            else box(
                "no language adapter",
                "#eeeeee",
                "the –LAD task adapter runs alone" if lad else "the task adapter runs alone",
            )
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
        f"<tr><td style='overflow-wrap:anywhere'>{html.escape(r['part'])}</td>"
        f"<td style='text-align:right;white-space:nowrap' title='{r['parameters']:,}'>{_fmt(r['parameters'])}</td>"
        f"<td style='text-align:right'>{_percent(r['percent_of_backbone'])}</td></tr>"
        for r in budget.values()
    )
    return (
        f"<div id='stack-diagram' data-task='{html.escape(entry.task if entry else '')}' "
        f"data-head='{html.escape(head or '')}' "
        "style='display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start'>"
        f"<div style='flex:1 1 240px;min-width:0;max-width:360px'>{''.join(parts)}</div>"
        "<div style='flex:1 1 280px;min-width:0;overflow-x:auto'><b>Parameter budget</b>"
        "<table style='width:100%;font-size:0.9em'><tr><th style='text-align:left'>part</th><th>parameters</th>"
        f"<th>% of backbone</th></tr>{table}</table>"
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


def example_adapter(state: AppState, code: str) -> tuple[str, str]:
    """(language adapter, sentence) for an example in language `code`: its own adapter, or the nearest shipped one."""
    from madx_core.backbones import LANGUAGE_NAMES

    name = LANGUAGE_NAMES.get(code, code)
    entry = state.registry.entries.get(code)
    if entry is not None and entry.kind == "language":
        return code, f"{name} example: run with the {name} language adapter `{code}`."
    nearest, why = NEAREST_ADAPTER.get(code, (NO_ADAPTER, f"no {name} adapter ships, so no language adapter is used"))
    if nearest != NO_ADAPTER and nearest not in state.registry.entries:
        nearest, why = NO_ADAPTER, f"no {name} adapter ships, so no language adapter is used"
    return nearest, f"{name} example: {why} (`{nearest}`)."


def legend_html() -> str:
    """What the entity colours and the numbers on them mean."""
    chips = " ".join(
        f"<span style='background:{color};color:#fff;border-radius:4px;padding:1px 6px;font-weight:600'>{label}</span>"
        f" {ENTITY_NAMES[label]}"
        for label, color in ENTITY_COLORS.items()
        if label != "DATE"
    )
    return (
        f"<div id='entity-legend' style='font-size:0.9em;line-height:1.9'>{chips}<br>"
        "The number after the type is the model's confidence: the probability it gives the entity's label, "
        "averaged over the entity's tokens (1.00 = certain). It is not a measured accuracy.</div>"
    )


def build(state: AppState) -> dict:
    """Lay out the Explore tab and wire its events; returns the components other tabs refresh."""
    from .readings import adapters_summary, training_line

    reg = state.registry
    examples = load_examples()
    ner_examples_list, qa_examples_list = examples.get("ner", []), examples.get("qa", [])
    default_lang = "en" if "en" in reg.entries else NO_ADAPTER
    default_target = next((c for c in ("sw", "de", "ha") if c in reg.entries), default_lang)

    gr.Markdown(
        "Pick a **language adapter** and a **task adapter** and run them on the frozen multilingual backbone. The "
        "shipped task adapters were trained on English data on top of the English language adapter; MAD-X's "
        "zero-shot transfer swaps in the adapter of your text's language. Whether that helps on this backbone: see "
        "*Transfer scores*. " + training_line(state)
    )
    with gr.Accordion("What the shipped adapters are, and how much they were trained", open=False):
        gr.Markdown(adapters_summary(state), elem_id="adapters-summary")
    with gr.Row():
        backbone = gr.Dropdown(
            backbone_choices(state),
            value=reg.default_backbone,
            label="backbone",
            allow_custom_value=True,
            scale=1,
            min_width=160,
        )
        lang = gr.Dropdown(
            [(NO_ADAPTER, NO_ADAPTER)],
            value=default_lang,
            label="language adapter",
            allow_custom_value=True,
            scale=2,
            min_width=160,
        )
    active = gr.State("ner")  # which sub-tab is open: the diagram shows its task adapter
    with gr.Tabs():
        with gr.Tab("Named entities (NER)", id="ner") as ner_tab:
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=280):
                    ner_text = gr.Textbox(
                        label="text", lines=4, placeholder="Type a sentence in any language", elem_id="ner-text"
                    )
                    with gr.Row():
                        ner_btn = gr.Button("Find entities", variant="primary", elem_id="ner-run", min_width=120)
                        ner_cmp_btn = gr.Button("Compare stacks", elem_id="ner-compare", min_width=120)
                    ner_task = gr.Dropdown([], value="ner", label="NER task adapter", allow_custom_value=True)
                with gr.Column(scale=1, min_width=280):
                    ner_out = gr.HighlightedText(
                        label="entities (type and confidence)",
                        color_map=SCORE_COLORS,
                        elem_id="ner-out",
                        elem_classes=["madx-highlight"],
                    )
                    ner_note = gr.Markdown(elem_id="ner-note")
                    gr.HTML(legend_html())
            ner_examples = gr.Dataset(
                components=["textbox"],
                samples=[[f"{e['lang']} · {e['text']}"] for e in ner_examples_list],
                type="index",
                label="Examples (click one: it runs with its own language's adapter, or the nearest shipped one)",
                samples_per_page=16,
                elem_id="ner-examples",
            )
            with gr.Accordion("entities as data", open=False):
                ner_json = gr.JSON(label="entities")
            ner_ctx = gr.Textbox(visible=False, value="")  # /compare's context input; NER has none
        with gr.Tab("Question answering (QA)", id="qa") as qa_tab:
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=280):
                    question = gr.Textbox(label="question", lines=1, elem_id="qa-question")
                    context = gr.Textbox(label="context", lines=6, elem_id="qa-context")
                    with gr.Row():
                        qa_btn = gr.Button("Answer", variant="primary", elem_id="qa-run", min_width=120)
                        qa_cmp_btn = gr.Button("Compare stacks", elem_id="qa-compare", min_width=120)
                    qa_task = gr.Dropdown([], value="qa", label="QA task adapter", allow_custom_value=True)
                with gr.Column(scale=1, min_width=280):
                    qa_out = gr.HighlightedText(
                        label="answer in the context",
                        color_map=SCORE_COLORS,
                        elem_id="qa-out",
                        elem_classes=["madx-highlight"],
                    )
                    qa_note_md = gr.Markdown(elem_id="qa-note")
            qa_examples = gr.Dataset(
                components=["textbox"],
                samples=[[f"{e['lang']} · {e['question']}"] for e in qa_examples_list],
                type="index",
                label="Examples (click one: it runs with its own language's adapter, or the nearest shipped one)",
                samples_per_page=16,
                elem_id="qa-examples",
            )
            with gr.Accordion("answer as data", open=False):
                qa_json = gr.JSON(label="answer")

    with gr.Accordion(
        "Compare: (a) no language adapter (–LAD), (b) source adapter, (c) target adapter", open=True, elem_id="compare"
    ):
        with gr.Row():
            source = gr.Dropdown(
                [], value=default_lang, label="source language adapter (b)", allow_custom_value=True, min_width=160
            )
            target = gr.Dropdown(
                [], value=default_target, label="target language adapter (c)", allow_custom_value=True, min_width=160
            )
        with gr.Row():
            cmp_outs = [
                gr.HighlightedText(
                    label=t,
                    color_map=SCORE_COLORS,
                    elem_classes=["madx-highlight"],
                    min_width=200,
                    elem_id=f"compare-{i}",
                )
                for i, t in enumerate(
                    (
                        "(a) no language adapter: the –LAD task adapter",
                        "(b) source adapter under the task adapter",
                        "(c) target adapter under the task adapter",
                    )
                )
            ]
        cmp_summary = gr.Markdown(elem_id="compare-summary")

    with gr.Accordion("The active stack and what it costs", open=True):
        diagram = gr.HTML(elem_id="stack-box")

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

    def show_active(backbone: str, language_adapter: str, ner_adapter: str, qa_adapter: str, which: str):
        return stack_html(state, backbone, language_adapter, qa_adapter if which == "qa" else ner_adapter)

    def stack_note(language_adapter: str, task_adapter: str, default_task: str) -> str:
        task_adapter = task_for(state, language_adapter, task_adapter or default_task)
        names = _stack_names(language_adapter, task_adapter)
        return f"Ran the stack **{' → '.join(names)}**" + (
            " (the –LAD task adapter: no language adapter)" if len(names) == 1 else ""
        )

    @friendly
    def run_ner_example(index: int, backbone: str, task_adapter: str, source_adapter: str):
        ex = ner_examples_list[int(index)]
        adapter, why = example_adapter(state, ex["lang"])
        shown, entities = ner(state, ex["text"], backbone, adapter, task_adapter)
        target_update = adapter if adapter not in (NO_ADAPTER, source_adapter) else gr.skip()
        note = f"{why} Ran the stack **{' → '.join(shown['stack'])}**."
        return ex["text"], adapter, target_update, entity_highlight(shown), entities, note

    @friendly
    def run_qa_example(index: int, backbone: str, task_adapter: str, source_adapter: str):
        ex = qa_examples_list[int(index)]
        adapter, why = example_adapter(state, ex["lang"])
        shown, answer = qa(state, ex["question"], ex["context"], backbone, adapter, task_adapter)
        target_update = adapter if adapter not in (NO_ADAPTER, source_adapter) else gr.skip()
        note = f"{why} Ran the stack **{' → '.join(shown['stack'])}**. {answer['note']}"
        return ex["question"], ex["context"], adapter, target_update, answer_highlight(shown), answer, note

    inference = dict(concurrency_limit=INFERENCE_WORKERS, concurrency_id="inference")
    ner_inputs = [ner_text, backbone, lang, ner_task]
    for event in (
        ner_btn.click(run_ner, ner_inputs, [ner_out, ner_json], api_name="ner", **inference),
        ner_text.submit(run_ner, ner_inputs, [ner_out, ner_json], api_visibility="private", **inference),
    ):
        event.success(
            lambda lg, t: stack_note(lg, t, "ner"), [lang, ner_task], ner_note, api_visibility="private", queue=False
        )
    qa_btn.click(
        run_qa, [question, context, backbone, lang, qa_task], [qa_out, qa_json], api_name="qa", **inference
    ).success(lambda a: a.get("note", "") if isinstance(a, dict) else "", qa_json, qa_note_md,
              api_visibility="private", queue=False)  # fmt: skip
    ner_examples.click(
        run_ner_example,
        [ner_examples, backbone, ner_task, source],
        [ner_text, lang, target, ner_out, ner_json, ner_note],
        api_visibility="private",
        **inference,
    )
    qa_examples.click(
        run_qa_example,
        [qa_examples, backbone, qa_task, source],
        [question, context, lang, target, qa_out, qa_json, qa_note_md],
        api_visibility="private",
        **inference,
    )
    cmp_outputs = [*cmp_outs, cmp_summary]
    scroll = "() => document.getElementById('compare')?.scrollIntoView({behavior: 'smooth', block: 'start'})"
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
    for button in (ner_cmp_btn, qa_cmp_btn):  # the results are below: bring them into view
        button.click(None, None, None, js=scroll, api_visibility="private", queue=False)
    stack_inputs = [backbone, lang, ner_task, qa_task, active]
    for trigger in (backbone.change, lang.change, ner_task.change, qa_task.change):
        trigger(show_active, stack_inputs, diagram, api_visibility="private", queue=False)
    ner_tab.select(lambda: "ner", None, active, api_visibility="private", queue=False).then(
        show_active, stack_inputs, diagram, api_visibility="private", queue=False
    )
    qa_tab.select(lambda: "qa", None, active, api_visibility="private", queue=False).then(
        show_active, stack_inputs, diagram, api_visibility="private", queue=False
    )

    return {
        "backbone": backbone,
        "lang": lang,
        "ner_task": ner_task,
        "qa_task": qa_task,
        "source": source,
        "target": target,
        "diagram": diagram,
        "show_stack": show_stack,
        "show_active": show_active,
        "stack_inputs": stack_inputs,
    }


def backbone_choices(state: AppState) -> list[tuple[str, str]]:
    """The backbones as (label, name); offline, the Hub backbones say why they cannot be used here."""
    from .state import offline

    is_offline = offline()
    out = []
    for name in state.registry.backbone_choices():
        if name != state.registry.default_backbone and is_offline:
            out.append((f"{name} (unavailable: needs the Hugging Face Hub, which is offline here)", name))
        else:
            out.append((name, name))
    return out


def _compare_summary(runs: list[dict]) -> str:
    lines = ["| stack | result |", "| --- | --- |"]
    for r in runs:
        if isinstance(r["result"], list):
            found = ", ".join(f"{e['text']} ({e['label']} {e['score']:.2f})" for e in r["result"][:12]) or "no entities"
        else:
            found = f"“{r['result']['answer']}” (confidence {r['result']['score']:.2f})"
        lines.append(f"| {' → '.join(r['stack'])} | {found.replace('|', '/')} |")
    return "\n".join(lines)
