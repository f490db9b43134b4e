"""Results: the shipped results.json plus the evaluations each visitor ran in the app."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from pathlib import Path

from madx_core.atomic import atomic_write_text

from .limits import MAX_VISITOR_ROWS, MAX_VISITORS


class Results:
    """Rows {system, source, target, task, metric, value, seed, ...}: the shipped ones, shared by everyone, and the
    evaluations each visitor ran, kept for that visitor's browser session only (in memory).

    A visitor's rows never reach other visitors: a score on a one-sentence file must not be drawn next to the
    full-test-set results that everyone sees.
    """

    def __init__(self, assets: Path, work_dir: Path):
        self.shipped_file = assets / "results.json"
        self.recipes_file = assets / "recipes.json"  # scripts/adapter_recipes.py: the language-adapter learning curve
        self.downloads = work_dir / "downloads"
        self._by_visitor: dict[str, list[dict]] = {}  # insertion-ordered: the oldest session is forgotten first
        self._lock = threading.Lock()

    @staticmethod
    def _read(path: Path) -> list[dict]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return []
        rows = data.get("rows") if isinstance(data, dict) else None
        return [r for r in rows or [] if isinstance(r, dict) and {"system", "target", "metric", "value"} <= set(r)]

    def rows(self, visitor: str | None = None) -> list[dict]:
        """The shipped rows, plus this visitor's own evaluations (none when `visitor` is None)."""
        with self._lock:
            own = list(self._by_visitor.get(visitor, [])) if visitor else []
        return [{**r, "origin": "shipped"} for r in self._read(self.shipped_file)] + [
            {**r, "origin": "your evaluation"} for r in own
        ]

    def recipes(self) -> list[dict]:
        """The shipped language-adapter recipe summary (one row per recipe and target), or [] when absent."""
        try:
            data = json.loads(self.recipes_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return []
        rows = data.get("summary") if isinstance(data, dict) else None
        return [r for r in rows or [] if isinstance(r, dict) and {"recipe", "target", "steps"} <= set(r)]

    def recipes_task_adapters(self) -> dict:
        """How the English NER task adapters the recipes were scored with were trained (recipes.json), or {}."""
        try:
            data = json.loads(self.recipes_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        info = data.get("task_adapters") if isinstance(data, dict) else None
        return info if isinstance(info, dict) else {}

    def add(self, rows: list[dict], visitor: str | None) -> None:
        if not visitor:
            return  # no session to keep them for: the caller still gets its rows
        with self._lock:
            kept = (self._by_visitor.pop(visitor, []) + rows)[-MAX_VISITOR_ROWS:]
            self._by_visitor[visitor] = kept
            while len(self._by_visitor) > MAX_VISITORS:
                self._by_visitor.pop(next(iter(self._by_visitor)))

    def csv(self, visitor: str | None = None) -> Path:
        """The rows this visitor sees, as CSV in the downloads folder (one file per session, cells made inert)."""
        fields = [
            "system",
            "source",
            "target",
            "task",
            "metric",
            "value",
            "seed",
            "examples",
            "trainable_parameters",
            "origin",
        ]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in self.rows(visitor))
        token = hashlib.sha256(visitor.encode()).hexdigest()[:16] if visitor else "shipped"
        path = self.downloads / f"results-{token}.csv"
        atomic_write_text(path, buf.getvalue())
        return path


def csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (= + - @, tab, CR) is prefixed with ' (OWASP)."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value
