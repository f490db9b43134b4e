"""One adapter as the app knows it: its kind, task, origin and where its files are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from madx_core import adapterhub


@dataclass
class AdapterEntry:
    """One adapter the app knows about; `name` is unique and is the name it is loaded under in every model."""

    name: str
    kind: str  # "language" or "task"
    task: str | None  # "ner" or "qa" for task adapters
    origin: str  # "shipped", "shipped -INV", ANCHORED, "trained here", "uploaded", "AdapterHub"
    path: Path | None  # an AdapterHub directory; None for a Hub adapter not downloaded yet
    lang: str | None = None  # language code (language adapters) or training language (task adapters)
    hub_id: str | None = None
    backbone: str | None = None  # set when known (trained here); shipped ones fit the default backbone
    labels: list[str] = field(default_factory=list)  # NER labels of the head

    def label(self) -> str:
        from madx_core.backbones import LANGUAGE_NAMES

        if self.kind == "language":
            language = LANGUAGE_NAMES.get((self.lang or "").removesuffix("_noinv").removesuffix("_anchor"), "")
            return f"{self.name}{' · ' + language if language else ''} ({self.origin})"
        on = f", on {self.lang}" if self.lang else ""
        return f"{self.name} · {self.task.upper()} ({self.origin}{on})"


ANCHORED = "shipped, anchored to en: a variant"  # madx-anchor's target adapters (README, Results)
HEAD_TASKS = {"tagging": "ner", "question_answering": "qa"}  # the task heads this app runs


def describe_adapter(directory: Path) -> tuple[str, str | None, list[str]]:
    """("language" | "task", task, NER labels) of an AdapterHub directory, read from its JSON files."""
    info = adapterhub.inspect(directory)
    if info.kind == "language":
        return "language", None, []
    if info.head_type not in HEAD_TASKS:
        raise ValueError(f"{directory.name} has a {info.head_type!r} head; this app runs NER (tagging) and QA heads")
    return "task", HEAD_TASKS[info.head_type], info.labels
