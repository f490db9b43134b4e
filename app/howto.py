"""How it works: MAD-X in three steps, and two live checks on the user's own text.

1. The invertible adapter really inverts: embed -> NICE forward -> NICE inverse gives back the embeddings.
2. What stacking does: each adapter in Stack(language, task) adds its own residual change to every layer's output.
"""

from __future__ import annotations

import html

import gradio as gr
import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from .display import backbone_choices
from .errors import friendly
from .inputs import clean_text
from .limits import INFERENCE_WORKERS
from .registry import NO_ADAPTER
from .state import AppState

MAX_DEMO_TOKENS = 256

EXPLANATION = """
**MAD-X** (Pfeiffer, Vulić, Gurevych & Ruder, EMNLP 2020) transfers a task from a language with labelled data
(here English) to languages without any, while keeping one multilingual transformer **frozen**:

1. **Language adapters**: a small bottleneck (down-projection → ReLU → up-projection, plus a residual) after the
   feed-forward block of every layer, trained with masked language modelling on text of one language. An
   **invertible adapter** (NICE coupling) sits on the embeddings and is run *backwards* before the masked-LM output
   layer, so that the input and output embedding spaces are adapted to the language too.
2. **Task adapter**: trained on the source language's labelled data, stacked on the (frozen) source language adapter
   together with a prediction head.
3. **Zero-shot transfer**: at test time, swap the source language adapter for the target language's. Nothing else
   changes: the task adapter never saw the target language.

Because the stack is an argument of each forward pass, one loaded backbone serves every language and task here.
"""


def steps_html() -> str:
    """The three MAD-X steps as coloured boxes (language adapter green, task adapter orange, frozen grey)."""

    def col(title: str, rows: list[tuple[str, str]], note: str) -> str:
        boxes = "".join(
            f"<div style='background:{c};color:#1a1a1a;border-radius:8px;padding:5px 8px;margin:3px 0;"
            f"text-align:center;border:1px solid #0002'>{t}</div>"
            for t, c in rows
        )
        return (
            f"<div style='flex:1;min-width:200px;border:1px solid #8884;border-radius:10px;padding:8px'>"
            f"<div style='font-weight:600;text-align:center'>{title}</div>{boxes}"
            f"<div style='font-size:0.85em;opacity:0.8;text-align:center'>{note}</div></div>"
        )

    grey, green, orange, blue = "#e2e2e2", "#9be3a4", "#ffc58f", "#9ecbff"
    return (
        "<div style='display:flex;gap:12px;flex-wrap:wrap'>"
        + col(
            "1 · language adapters",
            [
                ("masked-LM head (inverse NICE first)", blue),
                ("lang. adapter <b>en</b> / <b>sw</b> / …", green),
                ("frozen transformer layers", grey),
                ("invertible adapter <b>en</b> / <b>sw</b>", green),
                ("embeddings", grey),
            ],
            "one per language, unlabelled text",
        )
        + col(
            "2 · task adapter on the source",
            [
                ("NER / QA head", blue),
                ("task adapter", orange),
                ("lang. adapter <b>en</b> (frozen)", green),
                ("frozen transformer layers", grey),
                ("invertible adapter <b>en</b>", green),
                ("embeddings", grey),
            ],
            "labelled English data",
        )
        + col(
            "3 · zero-shot on the target",
            [
                ("NER / QA head", blue),
                ("task adapter", orange),
                ("lang. adapter <b>sw</b> (swapped in)", green),
                ("frozen transformer layers", grey),
                ("invertible adapter <b>sw</b>", green),
                ("embeddings", grey),
            ],
            "no Swahili labels were ever used",
        )
        + "</div>"
    )


# ----------------------------------------------------------------------------------------------------------
# Live demonstrations


def _encode(tokenizer, text: str) -> dict:
    return tokenizer(text, truncation=True, max_length=MAX_DEMO_TOKENS, return_tensors="pt")


def tick_labels(tokens: list[str]) -> list[str]:
    """Token tick labels that Plotly shows as typed: '<s>' would be read as an HTML tag and drawn blank."""
    return [f"{i}:{html.escape(t)}" for i, t in enumerate(tokens)]


def invertibility_sentence(result: dict) -> str:
    """The invertibility check in one sentence a visitor can read."""
    verdict = "so the adapter **inverts**" if result["inverts"] else "so the adapter does **not** invert here"
    return (
        f"On your {result['tokens']} tokens the invertible adapter changes each embedding by "
        f"{100 * result['relative_change_by_adapter_mean']:.1f}% on average (it is not the identity), and running it "
        f"backwards gives the embeddings back to within {result['max_abs_reconstruction_error']:.1e} (largest "
        f"embedding value: {result['embedding_max_abs']:.2f}), float rounding: {verdict}."
    )


def stacking_sentence(rows: list[dict]) -> str:
    parts = [f"`{r['stack']}` {r['mean_cosine_distance_to_backbone']:.4f}" for r in rows]
    return (
        "Mean cosine distance of the last layer's output from the frozen backbone's (0 = unchanged): "
        + ", ".join(parts)
        + ". Each adapter moves the representation on its own, and the stack combines both changes."
    )


@torch.no_grad()
def invertibility(state: AppState, text: str, backbone: str, lang: str) -> tuple[dict, go.Figure]:
    """Embed the text, run the language adapter's NICE forward and inverse, and measure what comes back."""
    text = clean_text(text, limit=10_000)
    if not lang or lang == NO_ADAPTER:
        raise ValueError("pick a language adapter: the invertible adapter belongs to a language adapter")
    model, tokenizer, stack, _ = state.registry.resolve(backbone, lang, None, None)
    inv = model.adapters[stack.first()].invertible
    if inv is None:
        raise ValueError(f"adapter {lang!r} has no invertible adapter (the MAD-X –INV ablation); pick another")
    enc = _encode(tokenizer, text)
    e = model.backbone.embeddings(input_ids=enc["input_ids"])[0]  # [tokens, hidden]
    y = inv(e)
    back = inv(y, rev=True)
    change = (y - e).norm(dim=-1) / e.norm(dim=-1)
    error = (back - e).abs().max(dim=-1).values
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    result = {
        "tokens": len(tokens),
        "relative_change_by_adapter_mean": round(change.mean().item(), 6),
        "max_abs_reconstruction_error": float(error.max()),
        "embedding_max_abs": round(e.abs().max().item(), 4),
        "inverts": bool(error.max() < 1e-4 * max(1.0, e.abs().max().item())),
    }
    labels = tick_labels(tokens)
    fig = go.Figure(
        [
            go.Bar(x=labels, y=change.tolist(), name="‖NICE(e) − e‖ / ‖e‖  (what the adapter changes)"),
            go.Bar(x=labels, y=(error + 1e-12).tolist(), name="max |NICE⁻¹(NICE(e)) − e|  (reconstruction error)"),
        ]
    )
    fig.update_layout(
        barmode="group",
        yaxis=dict(type="log", title="per token (log scale)", exponentformat="power", dtick=2),
        title=f"invertible adapter of '{stack.first()}': it changes the embeddings, and its inverse undoes it",
        height=360,
        legend=dict(orientation="h", y=-0.3),
        margin=dict(l=50, r=20, t=50, b=40),
    )
    return result, fig


@torch.no_grad()
def stacking(state: AppState, text: str, backbone: str, lang: str, task_adapter: str) -> tuple[list[dict], go.Figure]:
    """How far each stack moves the final hidden states away from the frozen backbone's (cosine distance)."""
    text = clean_text(text, limit=10_000)
    model, tokenizer, full, _ = state.registry.resolve(backbone, lang, task_adapter, None)
    enc = _encode(tokenizer, text)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    base = model.encode(ids, mask, adapters=None)[0]
    names = list(full)
    stacks = [[n] for n in names] + ([names] if len(names) > 1 else [])
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    fig, rows = go.Figure(), []
    for stack in stacks:
        hidden = model.encode(ids, mask, adapters=stack)[0]
        distance = 1 - F.cosine_similarity(hidden, base, dim=-1)
        label = "Stack(" + ", ".join(stack) + ")"
        rows.append({"stack": label, "mean_cosine_distance_to_backbone": round(distance.mean().item(), 5)})
        fig.add_trace(go.Scatter(x=tick_labels(tokens), y=distance.tolist(), mode="lines+markers", name=label))
    fig.update_layout(
        title="how far each stack moves the last layer's output from the frozen backbone's",
        yaxis_title="1 − cosine similarity",
        height=360,
        legend=dict(orientation="h", y=-0.3),
        margin=dict(l=50, r=20, t=50, b=40),
    )
    return rows, fig


# ----------------------------------------------------------------------------------------------------------
# The tab


def build(state: AppState) -> dict:
    reg = state.registry
    gr.Markdown(EXPLANATION)
    gr.HTML(steps_html())
    gr.Markdown(
        "**Inside one layer** (AdapterHub's Pfeiffer configuration): with `h0` the feed-forward output, `x` the "
        "layer's input and `LN` the layer's own LayerNorm, a Stack(language, task) computes  \n"
        "`o1 = LA(LN(h0 + x)) + h0`,  `o2 = TA(LN(o1 + x)) + o1`,  `out = LN(o2 + x)`.  \n"
        "**NICE** splits each embedding in halves: `y1 = x1 + F(x2)`, `y2 = x2 + G(y1)`; the inverse is "
        "`x2 = y2 − G(y1)`, `x1 = y1 − F(x2)`, exact whatever F and G are."
    )
    gr.Markdown("### Try it on your own text")
    with gr.Row():
        text = gr.Textbox(
            label="text", value="Wanafunzi wa Nairobi walitembelea makumbusho ya taifa jana.", lines=2, scale=3
        )
        backbone = gr.Dropdown(
            backbone_choices(state), value=reg.default_backbone, label="backbone", allow_custom_value=True
        )
        lang = gr.Dropdown(
            [], value="sw" if "sw" in reg.entries else "en", label="language adapter", allow_custom_value=True
        )
        task = gr.Dropdown([], value="ner", label="task adapter", allow_custom_value=True)
    with gr.Row():
        inv_btn = gr.Button("Check that the invertible adapter inverts", variant="primary")
        stack_btn = gr.Button("Show what stacking does")
    explained = gr.Markdown(elem_id="howto-result")
    demo_plot = gr.Plot(label="per token")
    with gr.Accordion("the measurements as data", open=False):
        with gr.Row():
            inv_json = gr.JSON(label="invertibility")
            stack_json = gr.JSON(label="stacking")

    @friendly
    def run_invertibility(text: str, backbone: str, language_adapter: str):
        return invertibility(state, text, backbone, language_adapter)

    @friendly
    def run_stacking(text: str, backbone: str, language_adapter: str, task_adapter: str):
        return stacking(state, text, backbone, language_adapter, task_adapter)

    demo = dict(concurrency_limit=INFERENCE_WORKERS, concurrency_id="inference")
    inv_btn.click(
        run_invertibility, [text, backbone, lang], [inv_json, demo_plot], api_name="invertibility", **demo
    ).success(invertibility_sentence, inv_json, explained, api_visibility="private", queue=False)
    stack_btn.click(
        run_stacking, [text, backbone, lang, task], [stack_json, demo_plot], api_name="stacking", **demo
    ).success(stacking_sentence, stack_json, explained, api_visibility="private", queue=False)
    return {"lang": lang, "task": task}
