"""The adapter registry: one serving model per backbone, the adapters the app knows, and which are loaded where.

MAD-X makes sharing easy: the adapter stack is an argument of every forward call (`adapters=Stack(...)`), so one
loaded backbone serves all users at once, each with their own language and task adapter. Adapters are loaded into
it once, under a name that is unique in the whole app, and never over a name that is already loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

from madx_core import adapterhub
from madx_core.adapters import Stack
from madx_core.atomic import atomic_write_text
from madx_core.backbones import CATALOG, hub_reachable
from madx_core.model import AdapterModel

from .entry import ANCHORED, AdapterEntry, describe_adapter
from .inputs import NAME_LIKE, NAME_RE, shown
from .uploads import Uploads

REPO = Path(__file__).resolve().parent.parent
NO_ADAPTER = "none"  # the language-adapter choice that runs the task adapter alone (MAD-X -LAD)
APP_META = ".app.json"  # the app's own note beside an adapter it keeps (origin, backbone), read again on restart


def asset_root() -> Path:
    return Path(os.environ.get("MADX_ASSETS") or REPO / "assets")


def work_root() -> Path:
    """Where the app writes trained and uploaded adapters, zips and its own evaluation results."""
    return Path(os.environ.get("MADX_APP_DIR") or REPO / "runs" / "app")


class Registry(Uploads):
    """Backbones loaded once (lazily), the adapters known to the app, and which of them each model has loaded."""

    def __init__(self, assets: Path | None = None, work_dir: Path | None = None):
        from madx_core.backbones import DEFAULT_BACKBONE

        self.assets = Path(assets) if assets else asset_root()
        self.work = Path(work_dir) if work_dir else work_root()
        self.default_backbone = DEFAULT_BACKBONE
        self.entries: dict[str, AdapterEntry] = {}
        self.version = 0  # bumped whenever an adapter is added, so open pages can refresh their dropdowns
        self._models: dict[str, tuple[AdapterModel, object]] = {}
        self._lock = threading.RLock()  # guards the dicts and (slow but rare) loading of models and adapters
        self._reserved: set[str] = set()  # names taken by uploads and jobs that are not registered yet
        self._init_uploads()
        self.scan_shipped()
        self.scan_work()

    @property
    def downloads(self) -> Path:
        """The one folder the app serves files from: zips and CSVs it wrote itself, never anything uploaded."""
        return self.work / "downloads"

    # --- backbones ---------------------------------------------------------------------------------------

    def backbone_choices(self) -> list[str]:
        return [self.default_backbone] + [n for n in CATALOG if n != self.default_backbone]

    def check_backbone(self, backbone: str | None) -> str:
        """A backbone name from the app's own list (empty: the default); never a path or Hub id from a request."""
        backbone = (backbone or "").strip() or self.default_backbone
        if backbone not in self.backbone_choices():
            shown = backbone if len(backbone) <= 60 and NAME_LIKE.match(backbone) else "that"
            raise ValueError(f"unknown backbone {shown!r}; choose one of: {', '.join(self.backbone_choices())}")
        return backbone

    def model(self, backbone: str | None = None) -> tuple[AdapterModel, object]:
        """The serving model and tokenizer of a backbone, loaded on first use and then shared by everyone."""
        from madx_core.backbones import load_tokenizer

        backbone = self.check_backbone(backbone)
        with self._lock:
            if backbone not in self._models:
                model = AdapterModel.from_pretrained(backbone)
                self._models[backbone] = (model, load_tokenizer(backbone))
                self.add_adapterhub_adapters(backbone)
            return self._models[backbone]

    def training_copy(self, backbone: str) -> tuple[AdapterModel, object]:
        """A fresh, private copy of a backbone for one training job (never the serving model)."""
        from madx_core.backbones import load_tokenizer

        backbone = self.check_backbone(backbone)
        return AdapterModel.from_pretrained(backbone), load_tokenizer(backbone)

    # --- adapters ----------------------------------------------------------------------------------------

    def scan_shipped(self) -> None:
        """Register the shipped adapters: assets/adapters/{lang,lang_noinv,lang_anchor,task}/<name>/ (missing ones
        are skipped)."""
        root = self.assets / "adapters"
        kinds = [("lang", "", "shipped"), ("lang_noinv", "_noinv", "shipped -INV")]
        kinds.append(("lang_anchor", "_anchor", ANCHORED))  # madx-anchor's target adapters
        for sub, suffix, origin in kinds:
            for d in sorted((root / sub).glob("*/")) if (root / sub).is_dir() else []:
                if (d / "adapter_config.json").is_file():
                    self._add(AdapterEntry(d.name + suffix, "language", None, origin, d, lang=d.name))
        for d in sorted((root / "task").glob("*/")) if (root / "task").is_dir() else []:
            try:
                kind, task, labels = describe_adapter(d)
            except ValueError:
                continue  # a half-written asset: leave it out rather than fail at start-up
            if kind == "task":
                self._add(AdapterEntry(d.name, "task", task, "shipped", d, lang="en", labels=labels))

    def scan_work(self) -> None:
        """Register again what the app trained or accepted before a restart: work/{trained,uploads}/<name>/.

        They are loaded on first use, like the shipped ones. A folder that is not a valid adapter any more is left
        out (and logged); temporary folders of an upload or job cut off by the restart are removed.
        """
        import logging

        for sub, origin in (("trained", "trained here"), ("uploads", "uploaded")):
            root = self.work / sub
            for d in sorted(root.iterdir()) if root.is_dir() else []:
                if d.name.startswith("."):
                    shutil.rmtree(d, ignore_errors=True)  # an unfinished upload or training output
                    continue
                try:
                    if not d.is_dir() or not NAME_RE.match(d.name) or d.name in self.entries:
                        raise ValueError("not an adapter folder with an app name")
                    kind, task, labels = describe_adapter(d)
                    note = _read_app_meta(d)
                    backbone = note.get("backbone") or self.default_backbone
                    if backbone not in self.backbone_choices():
                        raise ValueError(f"its backbone {backbone!r} is not offered here")
                except ValueError as e:
                    logging.getLogger("madx_app").warning("not registering %s/%s: %s", sub, d.name, e)
                    continue
                lang = note.get("lang") if isinstance(note.get("lang"), str) else None
                self._add(AdapterEntry(d.name, kind, task, origin, d, lang, backbone=backbone, labels=labels))

    def add_adapterhub_adapters(self, backbone: str) -> None:
        """AdapterHub's pre-trained MAD-X language adapters for this backbone, listed only when the Hub is reachable.

        They are downloaded on first use; their names say which backbone they belong to.
        """
        from madx_core.backbones import pretrained_language_adapters

        if not hub_reachable():
            return
        for code, hub_id in pretrained_language_adapters(backbone).items():
            name = f"hub-{code}-{backbone}"
            if name not in self.entries:
                self._add(AdapterEntry(name, "language", None, "AdapterHub", None, code, hub_id, backbone))

    def _add(self, entry: AdapterEntry) -> AdapterEntry:
        with self._lock:
            self.entries[entry.name] = entry
            self.version += 1
        return entry

    def _taken(self, name: str) -> bool:
        return (
            name in self.entries
            or name in self._reserved
            or (self.work / "trained" / name).exists()
            or (self.work / "uploads" / name).exists()
        )

    def unique_name(self, wanted: str) -> str:
        """The first free name among wanted, wanted-2, ... (free: not registered, reserved or on disk)."""
        with self._lock:
            name, i = wanted, 2
            while self._taken(name):
                suffix = f"-{i}"
                name, i = wanted[: 40 - len(suffix)] + suffix, i + 1
            return name

    def reserve(self, wanted: str) -> str:
        """Atomically take a unique name for an upload or a training job; `register_dir` or `release` frees it."""
        with self._lock:
            name = self.unique_name(wanted)
            self._reserved.add(name)
            return name

    def release(self, name: str) -> None:
        with self._lock:
            self._reserved.discard(name)

    def _all(self) -> list[AdapterEntry]:
        with self._lock:  # a copy: other threads may add adapters meanwhile
            return list(self.entries.values())

    def language_adapters(self) -> list[AdapterEntry]:
        return [e for e in self._all() if e.kind == "language"]

    def task_adapters(self, task: str | None = None) -> list[AdapterEntry]:
        return [e for e in self._all() if e.kind == "task" and (task is None or e.task == task)]

    def get(self, name: str, kind: str, task: str | None = None) -> AdapterEntry:
        entry = self.entries.get((name or "").strip())
        if entry is None or entry.kind != kind or (task and entry.task != task):
            pool = self.language_adapters() if kind == "language" else self.task_adapters(task)
            what = f"{task.upper() + ' ' if task else ''}{kind} adapter"
            known = ", ".join(e.name for e in pool) or "none yet (train one in the Train tab or upload one)"
            raise ValueError(f"unknown {what} {shown(name)}; available: {known}")
        return entry

    def ensure_loaded(self, backbone: str, entry: AdapterEntry) -> AdapterModel:
        """Load `entry` into the backbone's serving model once; later calls are a dict lookup."""
        model, _ = self.model(backbone)
        if entry.name in model.adapters:
            return model
        if entry.backbone and entry.backbone != backbone:
            raise ValueError(f"adapter {entry.name!r} was trained for {entry.backbone}, not {backbone}")
        with self._lock:
            if entry.name not in model.adapters:
                if entry.path is None:  # an AdapterHub adapter: download once
                    from madx_core.backbones import fetch_adapter

                    entry.path = Path(fetch_adapter(entry.hub_id))
                # A language adapter's own head (if a file has one) is never used: load only the adapter. A task
                # adapter's head goes under the adapter's own name, never over another one.
                adapterhub.load_adapter(
                    model,
                    entry.path,
                    load_as=entry.name,
                    with_head=entry.kind == "task",
                    head_as=entry.name,
                    exist_ok=False,
                )
        return model

    def resolve(
        self, backbone: str | None, lang: str | None, task_name: str | None, task: str | None
    ) -> tuple[AdapterModel, object, Stack | None, str | None]:
        """(model, tokenizer, stack, head) for a request; every name is checked and loaded once."""
        backbone = (backbone or "").strip() or self.default_backbone
        model, tokenizer = self.model(backbone)
        names = []
        if lang and lang.strip() and lang.strip() != NO_ADAPTER:
            entry = self.get(lang, "language")
            self.ensure_loaded(backbone, entry)
            names.append(entry.name)
        head = None
        if task_name is not None:
            entry = self.get(task_name, "task", task)
            self.ensure_loaded(backbone, entry)
            names.append(entry.name)
            head = entry.name
        return model, tokenizer, Stack(*names) if names else None, head

    def register_dir(
        self, directory: Path, origin: str, name: str, backbone: str, lang: str | None = None
    ) -> AdapterEntry:
        """Check an adapter directory, load it into the backbone's serving model, and make it selectable.

        `name` must have been reserved (or be free); the adapter and its head are loaded under it and nothing that is
        already loaded is replaced. The app's note beside it lets a restarted app register it again.
        """
        try:
            kind, task, labels = describe_adapter(directory)
            model, _ = self.model(backbone)
            with self._lock:
                if name in self.entries:
                    raise ValueError(f"an adapter named {name!r} exists already; choose another name")
                # Reads safetensors / weights_only tensors and checks every shape before the model changes.
                adapterhub.load_adapter(
                    model, directory, load_as=name, with_head=kind == "task", head_as=name, exist_ok=False
                )
                note = {"origin": origin, "backbone": backbone, "lang": lang}
                atomic_write_text(directory / APP_META, json.dumps(note))
                return self._add(AdapterEntry(name, kind, task, origin, directory, lang, backbone, labels=labels))
        finally:
            self.release(name)


def _read_app_meta(directory: Path) -> dict:
    try:
        note = json.loads((directory / APP_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}
