"""How Explore shows results: highlighted spans, the stack diagram with its parameter budget, comparison tables."""

from __future__ import annotations

import html

from madx_core.adapters import Stack
from madx_core.backbones import hub_reachable
from madx_core.model import AdapterModel
from madx_core.tasks import TASKS

from .inference import check_available, task_for
from .state import AppState

# Dark enough that the white label text Gradio draws on them has a contrast of at least 4.5:1 (WCAG AA).
ENTITY_COLORS = {"PER": "#b3261e", "LOC": "#0b5c8a", "ORG": "#6a3d9a", "DATE": "#7a5200", "MISC": "#2f6b1f"}
ENTITY_NAMES = {"PER": "person", "LOC": "location", "ORG": "organisation", "DATE": "date", "MISC": "other name"}
ANSWER_COLOR = "#8a4500"


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
    head_kind = TASKS[entry.task if entry and entry.task in TASKS else "qa"].head_title
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


def backbone_choices(state: AppState) -> list[tuple[str, str]]:
    """The backbones as (label, name); offline, the Hub backbones say why they cannot be used here."""
    is_offline = not hub_reachable()
    out = []
    for name in state.registry.backbone_choices():
        if name != state.registry.default_backbone and is_offline:
            out.append((f"{name} (unavailable: needs the Hugging Face Hub, which is offline here)", name))
        else:
            out.append((name, name))
    return out


def compare_summary(runs: list[dict]) -> str:
    lines = ["| stack | result |", "| --- | --- |"]
    for r in runs:
        if isinstance(r["result"], list):
            found = ", ".join(f"{e['text']} ({e['label']} {e['score']:.2f})" for e in r["result"][:12]) or "no entities"
        else:
            found = f"“{r['result']['answer']}” (confidence {r['result']['score']:.2f})"
        lines.append(f"| {' → '.join(r['stack'])} | {found.replace('|', '/')} |")
    return "\n".join(lines)
