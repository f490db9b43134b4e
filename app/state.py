"""What every user of the app shares: one model per backbone, the adapter registry, results, and the training runner.

MAD-X makes sharing easy: the adapter stack is an argument of every forward call (`adapters=Stack(...)`), so one
loaded backbone serves all users at once, each with their own language and task adapter. Adapters are loaded into
it once, under a name that is unique in the whole app. Training mutates a model (train mode, requires_grad), so
jobs run on a second copy of the backbone, one job at a time; the finished adapter is then loaded into the
serving model and appears in every user's dropdowns.

The app is public, so this module also holds what keeps visitors apart (README, "Security"): uploads keep only
AdapterHub files and get their own reserved name, quotas, a long-text lane, per-session results, and errors that
never show a server path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from madx_core import hub_format
from madx_core.adapters import Stack
from madx_core.atomic import atomic_open, atomic_write_text
from madx_core.model import AdapterModel

REPO = Path(__file__).resolve().parent.parent

# Caps that keep a free CPU Space (2 cores, 16 GB) responsive for everyone.
MAX_TEXT_CHARS = 200_000  # NER text / QA context; longer inputs are windowed, this only stops abuse
MAX_TRAIN_STEPS = 300
MAX_TRAIN_SECONDS = 600
MAX_TRAIN_TEXT_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # an adapter zip (a MAD-X language adapter of XLM-R base is ~30 MB in fp32)
MAX_UNZIPPED_BYTES = 200 * 1024 * 1024
MAX_EVAL_EXAMPLES = 500
NO_ADAPTER = "none"  # the language-adapter choice that runs the task adapter alone (MAD-X -LAD)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
NAME_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a catalog name is echoed in errors; a path never is
LANG_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})?$")  # a language code such as sw, pcm, zh-Hans
APP_META = ".app.json"  # the app's own note beside an adapter it keeps (origin, backbone), read again on restart

# Fair sharing: long texts take one lane, so they never hold every worker while one-sentence requests wait.
INFERENCE_WORKERS = 8  # Gradio's concurrency for the inference events (long texts hold at most MAX_LONG_REQUESTS)
LONG_TEXT_CHARS = 5_000  # a NER text or QA context longer than this is a "long" request
MAX_LONG_REQUESTS = 4  # long requests admitted at once (one computes, the others wait); more are told to retry
CHUNK_CHARS = 4_000  # a long NER text is tagged in pieces of about this size, taking turns with the others
MAX_REQUEST_SECONDS = 300  # a long request that has not finished by then is stopped with a message

# Upload quotas: per visitor (client address) and for the whole app, on count and on disk.
UPLOADS_PER_VISITOR = 10
UPLOAD_WINDOW_S = 3600
MAX_UPLOADED_ADAPTERS = 50
MAX_UPLOADED_BYTES = 500 * 1024 * 1024
MAX_VISITOR_ROWS = 200  # evaluation rows kept per browser session
MAX_VISITORS = 1_000  # sessions whose evaluation rows are kept (the oldest are forgotten first)


def asset_root() -> Path:
    return Path(os.environ.get("MADX_ASSETS") or REPO / "assets")


def work_root() -> Path:
    """Where the app writes trained and uploaded adapters, zips and its own evaluation results."""
    return Path(os.environ.get("MADX_APP_DIR") or REPO / "runs" / "app")


def offline() -> bool:
    """True when the Hugging Face Hub is switched off (MADX_OFFLINE / HF_HUB_OFFLINE) or does not answer."""
    from madx_core.backbones import hub_reachable

    return not hub_reachable()


# ----------------------------------------------------------------------------------------------------------
# Input checks shared by the tabs


def clean_text(text: str | None, what: str = "text", limit: int = MAX_TEXT_CHARS) -> str:
    """Replace control characters and lone surrogates by spaces (same length, so offsets stay valid); check size."""
    text = text or ""
    if not text.strip():
        raise ValueError(f"the {what} is empty: type or paste some {what}, or click an example")
    if len(text) > limit:
        raise ValueError(f"the {what} has {len(text):,} characters; the limit here is {limit:,}")
    return "".join(
        " " if unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" else c for c in text
    )  # category Cc: C0/C1 controls, Cs: surrogates the tokenizer cannot encode


def shown(value: object, limit: int = 60) -> str:
    """A visitor's input as quoted in an error message: repr'd and cut, so a 100,000-character input stays short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_name(name: str | None, what: str = "adapter name") -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise ValueError(
            f"{what} {shown(name)} is not allowed: use 1-40 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


# ----------------------------------------------------------------------------------------------------------
# The adapter registry


@dataclass
class AdapterEntry:
    """One adapter the app knows about; `name` is unique and is the name it is loaded under in every model."""

    name: str
    kind: str  # "language" or "task"
    task: str | None  # "ner" or "qa" for task adapters
    origin: str  # "shipped", "shipped -INV", "trained here", "uploaded", "AdapterHub"
    path: Path | None  # an AdapterHub directory; None for a Hub adapter not downloaded yet
    lang: str | None = None  # language code (language adapters) or training language (task adapters)
    hub_id: str | None = None
    backbone: str | None = None  # set when known (trained here); shipped ones fit the default backbone
    labels: list[str] = field(default_factory=list)  # NER labels of the head

    def label(self) -> str:
        from madx_core.backbones import LANGUAGE_NAMES

        if self.kind == "language":
            language = LANGUAGE_NAMES.get((self.lang or "").removesuffix("_noinv"), "")
            return f"{self.name}{' · ' + language if language else ''} ({self.origin})"
        on = f", on {self.lang}" if self.lang else ""
        return f"{self.name} · {self.task.upper()} ({self.origin}{on})"


HEAD_TASKS = {"tagging": "ner", "question_answering": "qa"}  # the task heads this app runs


def describe_adapter(directory: Path) -> tuple[str, str | None, list[str]]:
    """("language" | "task", task, NER labels) of an AdapterHub directory, read from its JSON files."""
    info = hub_format.inspect(directory)
    if info.kind == "language":
        return "language", None, []
    if info.head_type not in HEAD_TASKS:
        raise ValueError(f"{directory.name} has a {info.head_type!r} head; this app runs NER (tagging) and QA heads")
    info.check_head_name()  # loading would refuse it too (exist_ok=False); a scan leaves it out at once
    return "task", HEAD_TASKS[info.head_type], info.labels


class Registry:
    """Backbones loaded once (lazily), the adapters known to the app, and which of them each model has loaded."""

    def __init__(self, assets: Path | None = None, work_dir: Path | None = None):
        from madx_core.backbones import DEFAULT_BACKBONE

        self.assets = Path(assets) if assets else asset_root()
        self.work = Path(work_dir) if work_dir else work_root()
        self.default_backbone = DEFAULT_BACKBONE
        self.entries: dict[str, AdapterEntry] = {}
        self.version = 0  # bumped whenever an adapter is added, so open pages can refresh their dropdowns
        self.upload_quota = (UPLOADS_PER_VISITOR, UPLOAD_WINDOW_S, MAX_UPLOADED_ADAPTERS, MAX_UPLOADED_BYTES)
        self._models: dict[str, tuple[AdapterModel, object]] = {}
        self._lock = threading.RLock()  # guards the dicts and (slow but rare) loading of models and adapters
        self._reserved: set[str] = set()  # names taken by uploads and jobs that are not registered yet
        self._uploads_by: dict[str, list[float]] = {}  # visitor -> times of their accepted uploads
        self._uploads_in_flight = 0  # uploads being checked and loaded now (they count against the app-wide cap)
        self.scan_shipped()
        self.scan_work()

    @property
    def downloads(self) -> Path:
        """The one folder the app serves files from: zips and CSVs it wrote itself, never anything uploaded."""
        return self.work / "downloads"

    # --- backbones ---------------------------------------------------------------------------------------

    def backbone_choices(self) -> list[str]:
        from madx_core import backbones

        names = list(getattr(backbones, "CATALOG", {}) or [])
        return [self.default_backbone] + [n for n in names if n != self.default_backbone]

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
                self.add_hub_adapters(backbone)
            return self._models[backbone]

    def training_copy(self, backbone: str) -> tuple[AdapterModel, object]:
        """A fresh, private copy of a backbone for one training job (never the serving model)."""
        from madx_core.backbones import load_tokenizer

        backbone = self.check_backbone(backbone)
        return AdapterModel.from_pretrained(backbone), load_tokenizer(backbone)

    # --- adapters ----------------------------------------------------------------------------------------

    def scan_shipped(self) -> None:
        """Register the shipped adapters: assets/adapters/{lang,lang_noinv,task}/<name>/ (missing ones are skipped)."""
        root = self.assets / "adapters"
        for sub, suffix, origin in (("lang", "", "shipped"), ("lang_noinv", "_noinv", "shipped -INV")):
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

    def add_hub_adapters(self, backbone: str) -> None:
        """AdapterHub's pre-trained MAD-X language adapters for this backbone, listed only when the Hub is reachable.

        They are downloaded on first use; their names say which backbone they belong to.
        """
        from madx_core.backbones import pretrained_language_adapters

        if offline():
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
                hub_format.load_adapter(
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
                hub_format.load_adapter(
                    model, directory, load_as=name, with_head=kind == "task", head_as=name, exist_ok=False
                )
                note = {"origin": origin, "backbone": backbone, "lang": lang}
                atomic_write_text(directory / APP_META, json.dumps(note))
                return self._add(AdapterEntry(name, kind, task, origin, directory, lang, backbone, labels=labels))
        finally:
            self.release(name)

    # --- safe upload and download of adapter zips -----------------------------------------------------

    def _take_upload_slot(self, visitor: str) -> float:
        """Count an upload against the quotas before it is read (atomically: simultaneous uploads cannot overshoot).

        Returns the slot's time stamp; `_give_back_upload_slot` returns it when the upload is refused.
        """
        per_visitor, window, max_count, max_bytes = self.upload_quota
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._uploads_by.get(visitor, []) if now - t < window]
            self._uploads_by[visitor] = recent
            if len(recent) >= per_visitor:
                raise ValueError(
                    f"upload limit reached: {per_visitor} adapters per visitor per {window // 60} minutes; "
                    "please try again later"
                )
            uploaded = [e for e in self.entries.values() if e.origin == "uploaded"]
            if len(uploaded) + self._uploads_in_flight >= max_count:
                raise ValueError(f"this app holds its maximum of {max_count} uploaded adapters; no more are accepted")
            used = sum(f.stat().st_size for e in uploaded if e.path for f in e.path.iterdir() if f.is_file())
            if used >= max_bytes:
                raise ValueError(f"the uploaded adapters fill this app's {max_bytes // 2**20} MB; no more are accepted")
            recent.append(now)
            self._uploads_in_flight += 1
            return now

    def _give_back_upload_slot(self, visitor: str, slot: float, accepted: bool) -> None:
        with self._lock:
            self._uploads_in_flight -= 1
            if not accepted and slot in self._uploads_by.get(visitor, []):
                self._uploads_by[visitor].remove(slot)  # a refused upload does not count against the visitor

    def uploads_by(self, visitor: str) -> int:
        """How many uploads this visitor made within the quota window."""
        now = time.monotonic()
        with self._lock:
            return sum(now - t < self.upload_quota[1] for t in self._uploads_by.get(visitor, []))

    def upload_zip(self, zip_path: str | Path, backbone: str | None = None, visitor: str = "local") -> AdapterEntry:
        """Extract an uploaded AdapterHub zip safely, load it, and register it under a new unique name.

        Only the AdapterHub files are kept; the name is reserved atomically, so two uploads of the same adapter at
        once get two names; a refused upload leaves no folder, no name and no loaded module behind.
        """
        backbone = self.check_backbone(backbone)
        slot = self._take_upload_slot(visitor)
        accepted = False
        uploads = self.work / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".upload.", dir=uploads))
        try:
            directory = extract_adapter_zip(Path(zip_path), tmp)
            saved = hub_format.inspect(directory).name or Path(zip_path).stem
            name = self.reserve(re.sub(r"[^A-Za-z0-9_-]", "-", saved)[:40].strip("-_") or "uploaded")
            final = uploads / name
            try:
                os.rename(directory, final)  # the reservation made sure nothing is there
                lang = saved if LANG_RE.match(saved) else None  # shown in dropdown labels: a code or nothing
                entry = self.register_dir(final, "uploaded", name, backbone, lang=lang)
            except BaseException:
                self.release(name)
                shutil.rmtree(final, ignore_errors=True)
                raise
            accepted = True
            return entry
        finally:
            self._give_back_upload_slot(visitor, slot, accepted)
            shutil.rmtree(tmp, ignore_errors=True)

    def zip_adapter(self, name: str) -> Path:
        """A zip of an adapter's AdapterHub files (`<name>/adapter_config.json`, ...) in the downloads folder."""
        entry = self.entries.get(name)
        if entry is None or entry.path is None:
            raise ValueError(f"unknown adapter {name!r}")
        out = self.downloads / f"{name}.zip"
        with atomic_open(out, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for file_name in hub_format.FILES:
                if (entry.path / file_name).is_file():
                    zf.write(entry.path / file_name, f"{name}/{file_name}")
        return out


def _read_app_meta(directory: Path) -> dict:
    try:
        note = json.loads((directory / APP_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def extract_adapter_zip(zip_path: Path, dest: Path) -> Path:
    """Check a zip and extract its one adapter's AdapterHub files (configs and weights) flat into `dest`.

    Every member is checked before anything is written: no absolute paths, no `..`, no symlinks or other special
    files, bounded sizes (declared and actual). Only the six AdapterHub file names are extracted: anything else
    (a README, an .html page, a script) is dropped, so nothing from an upload can ever be served or run.
    Nothing in it is executed or unpickled here.
    """
    if not zip_path.is_file():
        raise ValueError("no file was uploaded")
    size = zip_path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"the upload is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    if not zipfile.is_zipfile(zip_path):
        raise ValueError("the upload is not a zip file: zip an AdapterHub adapter directory (adapter_config.json ...)")
    dest = dest.resolve()
    with zipfile.ZipFile(zip_path) as zf:
        members = zf.infolist()
        total = 0
        for info in members:
            name = info.filename
            mode = info.external_attr >> 16
            target = (dest / name).resolve()
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
                raise ValueError(f"refused: the zip member {name!r} has an absolute or Windows path")
            if ".." in Path(name).parts or not target.is_relative_to(dest):
                raise ValueError(f"refused: the zip member {name!r} points outside its folder")
            kind = stat.S_IFMT(mode)  # 0 when the zip records no file type (plain files from many zip tools)
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise ValueError(f"refused: the zip member {name!r} is a link or special file")
            total += info.file_size
        if total > MAX_UNZIPPED_BYTES:
            raise ValueError(
                f"refused: the zip unpacks to {total / 2**20:.0f} MB (limit {MAX_UNZIPPED_BYTES // 2**20} MB)"
            )
        folders = {str(Path(i.filename).parent) for i in members if Path(i.filename).name == "adapter_config.json"}
        if not folders:
            raise ValueError(
                "the zip holds no adapter: adapter_config.json is missing (zip an AdapterHub adapter folder)"
            )
        if len(folders) > 1:
            raise ValueError("the zip holds several adapters; upload one adapter per zip")
        folder = folders.pop()
        kept = [
            i
            for i in members
            if not i.is_dir() and str(Path(i.filename).parent) == folder and Path(i.filename).name in hub_format.FILES
        ]
        written = 0
        for info in kept:
            with zf.open(info) as src, open(dest / Path(info.filename).name, "wb") as out:
                while chunk := src.read(1 << 20):  # count real bytes: declared sizes can lie
                    written += len(chunk)
                    if written > MAX_UNZIPPED_BYTES:
                        raise ValueError("refused: the zip unpacks to more than the size limit")
                    out.write(chunk)
    return dest


# ----------------------------------------------------------------------------------------------------------
# Results: the shipped results.json plus the evaluations run in the app


class Results:
    """Rows {system, source, target, task, metric, value, seed, ...}: the shipped ones, shared by everyone, and the
    evaluations each visitor ran, kept for that visitor's browser session only (in memory).

    A visitor's rows never reach other visitors: a score on a one-sentence file must not be drawn next to the
    full-test-set results that everyone sees.
    """

    def __init__(self, assets: Path, work_dir: Path):
        self.shipped_file = assets / "results.json"
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


def check_language(code: str | None) -> str:
    """A language code typed by a visitor (empty: 'unknown'); it ends up in result rows, so it is kept short."""
    code = (code or "").strip()
    if not code:
        return "unknown"
    if len(code) > 16 or not LANG_RE.match(code):
        raise ValueError("the data language must be a language code such as sw, pcm or zh-Hans")
    return code


# ----------------------------------------------------------------------------------------------------------
# Fair sharing of the CPU between visitors


class Lanes:
    """Long texts take turns on one lane, a chunk at a time, and only a few may wait; short requests never queue
    behind them.

    The inference events have more Gradio workers (INFERENCE_WORKERS) than long requests can hold
    (MAX_LONG_REQUESTS), so a one-sentence request always finds a free worker; and a long request gives the lane up
    after every chunk, so four long ones progress side by side and each ends by its deadline.
    """

    def __init__(self, long_chars: int = LONG_TEXT_CHARS, admitted: int = MAX_LONG_REQUESTS):
        self.long_chars = long_chars
        self._admitted = threading.BoundedSemaphore(admitted)
        self._compute = threading.Lock()
        self._stopped = threading.Event()
        self.long_requests = 0  # admitted long requests now (for tests and monitoring)
        self._count = threading.Lock()

    def run(self, chars: int, pieces: list, work: Callable) -> list:
        """[work(piece) for piece in pieces]: at once for a short request, in the long lane for a long one."""
        if chars <= self.long_chars:
            return [work(piece) for piece in pieces]
        if not self._admitted.acquire(blocking=False):
            raise Busy(
                "the machine is busy with other long texts right now: please try again in a minute, "
                f"or send a text under {self.long_chars:,} characters"
            )
        with self._count:
            self.long_requests += 1
        try:
            deadline = time.monotonic() + MAX_REQUEST_SECONDS
            results = []
            for piece in pieces:
                if self._stopped.is_set():
                    raise Busy("the app is shutting down; please try again in a minute")
                if time.monotonic() > deadline:
                    raise ValueError(
                        f"this text needed more than {MAX_REQUEST_SECONDS} s of the shared machine; "
                        "please send a shorter text"
                    )
                with self._compute:
                    results.append(work(piece))
            return results
        finally:
            with self._count:
                self.long_requests -= 1
            self._admitted.release()

    def stop(self) -> None:
        """Make long requests in flight end after their current chunk (the app is closing)."""
        self._stopped.set()


def text_chunks(text: str, size: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """(start, end) pieces of at most `size` characters, cut after a line or sentence end, else at a space."""
    pieces, start = [], 0
    while len(text) - start > size:
        window = text[start : start + size]
        cut = max(window.rfind("\n"), window.rfind(". "), window.rfind("。"), window.rfind("! "), window.rfind("? "))
        if cut < size // 2:
            cut = window.rfind(" ")
        end = start + (cut + 1 if cut >= size // 2 else size)
        pieces.append((start, end))
        start = end
    return pieces + [(start, len(text))]


def visitor_address(request) -> str:
    """Who a request comes from, for quotas: the client address.

    On a Space (SPACE_ID is set) the app sits behind Hugging Face's proxy, which appends the real client to
    X-Forwarded-For, so the last hop is used; elsewhere that header comes from the client itself and is ignored.
    """
    client = getattr(getattr(request, "client", None), "host", None) or "unknown"
    headers = getattr(request, "headers", None)
    if not os.environ.get("SPACE_ID") or headers is None or not hasattr(headers, "get"):
        return client
    hops = [h.strip() for h in (headers.get("x-forwarded-for") or "").split(",") if h.strip()]
    return hops[-1] if hops else client


def visitor_session(request) -> str | None:
    """The browser session (or gradio_client instance) a request comes from; its own evaluations are kept for it."""
    return getattr(request, "session_hash", None) or None


# ----------------------------------------------------------------------------------------------------------
# One training job at a time


class Busy(Exception):
    """Another job is running; the message says which and how far along it is."""


@dataclass
class Job:
    id: int
    kind: str  # "language" or "task"
    name: str
    backbone: str
    total: int = 0
    step: int = 0
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    state: str = "starting"  # starting, loading, training, saving, done, cancelled, failed
    message: str = ""
    entry: AdapterEntry | None = None
    owner: str | None = None  # the browser session (or API client) that started it; only it may cancel
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def record(self, info: dict) -> None:
        """The training loop's progress callback: {step, total, loss, elapsed}."""
        self.state, self.step, self.total = "training", int(info["step"]), int(info["total"])
        if info.get("loss") == info.get("loss"):  # skip NaN
            self.steps.append(self.step)
            self.losses.append(float(info["loss"]))

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> str:
        where = f"step {self.step}/{self.total}" if self.total else self.state
        eta = ""
        if self.step and self.total:  # at the rate so far, capped by the time limit
            left = min(self.elapsed() / self.step * (self.total - self.step), MAX_TRAIN_SECONDS - self.elapsed())
            eta = f", about {max(0.0, left):.0f} s left"
        return f"{self.kind} adapter {self.name!r} ({where}, {self.elapsed():.0f} s so far{eta})"


class JobRunner:
    """Runs at most one training job, in a background thread; others get a clear 'busy' message."""

    def __init__(self):
        self._lock = threading.Lock()
        self._current: Job | None = None
        self._ids = 0

    def current(self) -> Job | None:
        return self._current

    def start(
        self, kind: str, name: str, backbone: str, work: Callable[[Job], AdapterEntry], owner: str | None = None
    ) -> Job:
        with self._lock:
            job = self._current
            if job is not None and not job.finished.is_set():
                left = max(0, MAX_TRAIN_SECONDS - job.elapsed())
                raise Busy(
                    f"One training job runs at a time on this machine, and another is running: {job.summary()}. "
                    f"It ends within {left:.0f} s at most; please start yours after that."
                )
            self._ids += 1
            job = self._current = Job(self._ids, kind, name, backbone, owner=owner)
        threading.Thread(target=self._run, args=(job, work), name=f"train-{job.id}", daemon=True).start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], AdapterEntry]) -> None:
        from madx_core.training import Cancelled

        try:
            job.entry = work(job)
            job.state = "done"
            job.message = job.message or f"trained {job.kind} adapter {job.entry.name!r}"
        except Cancelled as e:
            job.state, job.message = "cancelled", f"cancelled: {e}; nothing was saved"
        except Exception as e:
            if job.cancel.is_set():  # cancelled, and the clean-up after Cancelled failed: still a cancel to the user
                job.state, job.message = "cancelled", f"cancelled; nothing was saved (clean-up: {_one_line(e)})"
                return  # the message goes to the user; the app keeps serving
            job.state, job.message = "failed", f"training failed: {_one_line(e)}"
        finally:
            job.finished.set()

    def cancel(self, job_id: int | None) -> bool:
        job = self._current
        if job is None or job.id != job_id or job.finished.is_set():
            return False
        job.cancel.set()
        return True


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return hide_paths(text.splitlines()[0]) if text else type(e).__name__


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:,;()]+){2,}[\\/]?")


def hide_paths(text: str) -> str:
    """Replace every absolute path in a message by its last part: errors never show where the app lives."""
    return _PATH.sub(lambda m: m.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1], text)


# ----------------------------------------------------------------------------------------------------------
# The whole shared state


@dataclass
class AppState:
    registry: Registry
    results: Results
    jobs: JobRunner
    lanes: Lanes = field(default_factory=Lanes)


def create_state(assets: Path | None = None, work_dir: Path | None = None) -> AppState:
    registry = Registry(assets, work_dir)
    registry.work.mkdir(parents=True, exist_ok=True)
    registry.downloads.mkdir(parents=True, exist_ok=True)
    return AppState(registry, Results(registry.assets, registry.work), JobRunner())


# ----------------------------------------------------------------------------------------------------------
# Errors for the UI and the API


def friendly(fn: Callable) -> Callable:
    """Turn any failure of a callback into a one-line gr.Error, so the user reads why and the app keeps serving."""
    import functools
    import html
    import inspect
    import logging

    import gradio as gr

    def as_error(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if not isinstance(e, ValueError | FileNotFoundError | KeyError | Busy):
            logging.getLogger("madx_app").exception("callback %s failed", fn.__name__)
        return gr.Error(html.escape(_one_line(e), quote=False), print_exception=False)  # shown as HTML

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise as_error(e) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise as_error(e) from None

    return wrapper
