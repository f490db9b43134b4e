"""What the Explore tab computes: NER and QA with a stack of the visitor's choice, three stacks side by side, examples.

The tab's callbacks only check input and format output; the work is here, on the registry's shared model, with the
stack as an argument of every call.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from madx_core.backbones import hub_reachable
from madx_core.evaluation import Entity, answer_question, tag_text

from .inputs import clean_text
from .jobs import text_chunks
from .registry import NO_ADAPTER
from .state import AppState

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EXAMPLES_FILE = ASSETS / "examples.json"
CALIBRATION_FILE = ASSETS / "qa_calibration.json"
LOW_QA_SCORE = 0.05  # fallback when assets/qa_calibration.json is missing
# Languages without a shipped adapter: the nearest shipped one, and why (an example says which it used).
NEAREST_ADAPTER = {
    "fr": ("es", "no French adapter ships; Spanish, the closest shipped language (both Romance), is used"),
    "hi": (NO_ADAPTER, "no Hindi adapter ships and none of the shipped languages is related, so no language adapter"),
}


def check_available(state: AppState, backbone: str | None) -> None:
    """Offline, a Hub backbone is listed (labelled unavailable) but refused at once with the reason."""
    name = state.registry.check_backbone(backbone)  # one of the app's own choices (never echoes anything else)
    if name != state.registry.default_backbone and not hub_reachable():
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
    start, end = pred.start, pred.end  # -1, -1 when there is no answer
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


def stack_names(lang: str, task: str) -> list[str]:
    return [task] if not lang or lang == NO_ADAPTER else [lang, task]


# ----------------------------------------------------------------------------------------------------------
# Examples written for this project


def load_examples() -> dict:
    try:
        return json.loads(EXAMPLES_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"ner": [], "qa": []}


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
