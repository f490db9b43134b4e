"""Explore: run a MAD-X stack on your own text (NER) or question (QA), compare stacks, see what the stack costs.

The tab's layout and wiring; what it computes is in `inference`, how it shows it in `display`.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from .display import (
    SCORE_COLORS,
    answer_highlight,
    backbone_choices,
    compare_summary,
    entity_highlight,
    legend_html,
    stack_html,
)
from .errors import friendly
from .inference import compare, example_adapter, load_examples, ner, qa, stack_names, task_for
from .limits import INFERENCE_WORKERS
from .registry import NO_ADAPTER
from .state import AppState


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
        "*Transfer scores*. The `…_anchor` language adapters are a variant beyond the paper that swaps better here "
        "(compare `sw`, `sw_anchor` and `en` on a Swahili sentence). " + training_line(state)
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
            ner_panel = task_panel(
                "ner",
                lambda: [
                    gr.Textbox(label="text", lines=4, placeholder="Type a sentence in any language", elem_id="ner-text")
                ],
                "Find entities",
                "entities (type and confidence)",
                [[f"{e['lang']} · {e['text']}"] for e in ner_examples_list],
                "entities",
                legend=True,
            )
            ner_ctx = gr.Textbox(visible=False, value="")  # /compare's context input; NER has none
        with gr.Tab("Question answering (QA)", id="qa") as qa_tab:
            qa_panel = task_panel(
                "qa",
                lambda: [
                    gr.Textbox(label="question", lines=1, elem_id="qa-question"),
                    gr.Textbox(label="context", lines=6, elem_id="qa-context"),
                ],
                "Answer",
                "answer in the context",
                [[f"{e['lang']} · {e['question']}"] for e in qa_examples_list],
                "answer",
            )
    (ner_text,), ner_btn, ner_cmp_btn, ner_task, ner_out, ner_note, ner_examples, ner_json = ner_panel
    (question, context), qa_btn, qa_cmp_btn, qa_task, qa_out, qa_note_md, qa_examples, qa_json = qa_panel

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
        return *shown, compare_summary(runs)

    def show_stack(backbone: str, language_adapter: str, task_adapter: str):
        return stack_html(state, backbone, language_adapter, task_adapter)

    def show_active(backbone: str, language_adapter: str, ner_adapter: str, qa_adapter: str, which: str):
        return stack_html(state, backbone, language_adapter, qa_adapter if which == "qa" else ner_adapter)

    def stack_note(language_adapter: str, task_adapter: str, default_task: str) -> str:
        task_adapter = task_for(state, language_adapter, task_adapter or default_task)
        names = stack_names(language_adapter, task_adapter)
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


def task_panel(
    task: str,
    inputs: Callable[[], list],
    run_label: str,
    out_label: str,
    samples: list[list[str]],
    data: str,
    legend: bool = False,
) -> tuple:
    """One task's panel (NER or QA): its inputs, run and compare buttons, task adapter, output, examples, raw data.

    Returns (inputs, run, compare, task adapter, output, note, examples, data); element ids start with `task`.
    """
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            fields = inputs()
            with gr.Row():
                run = gr.Button(run_label, variant="primary", elem_id=f"{task}-run", min_width=120)
                compare_btn = gr.Button("Compare stacks", elem_id=f"{task}-compare", min_width=120)
            adapter = gr.Dropdown([], value=task, label=f"{task.upper()} task adapter", allow_custom_value=True)
        with gr.Column(scale=1, min_width=280):
            out = gr.HighlightedText(
                label=out_label, color_map=SCORE_COLORS, elem_id=f"{task}-out", elem_classes=["madx-highlight"]
            )
            note = gr.Markdown(elem_id=f"{task}-note")
            if legend:
                gr.HTML(legend_html())
    examples = gr.Dataset(
        components=["textbox"],
        samples=samples,
        type="index",
        label="Examples (click one: it runs with its own language's adapter, or the nearest shipped one)",
        samples_per_page=16,
        elem_id=f"{task}-examples",
    )
    with gr.Accordion(f"{data} as data", open=False):
        raw = gr.JSON(label=data)
    return fields, run, compare_btn, adapter, out, note, examples, raw
