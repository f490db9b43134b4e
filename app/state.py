"""What every user of the app shares: one model per backbone, the adapter registry, results, and the training runner.

MAD-X makes sharing easy: the adapter stack is an argument of every forward call (`adapters=Stack(...)`), so one
loaded backbone serves all users at once, each with their own language and task adapter. Adapters are loaded into
it once, under a name that is unique in the whole app. Training mutates a model (train mode, requires_grad), so
jobs run on a second copy of the backbone, one job at a time; the finished adapter is then loaded into the
serving model and appears in every user's dropdowns.
"""

from __future__ import annotations

import csv
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

from madx_core.adapters import Stack
from madx_core.data import atomic_write_text
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
ADAPTER_FILES = ("adapter.safetensors", "pytorch_adapter.bin")


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


def check_name(name: str | None, what: str = "adapter name") -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise ValueError(
            f"{what} {name!r} is not allowed: use 1-40 letters, digits, '-' or '_', starting with a letter or digit"
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


def classify_adapter_dir(directory: Path) -> tuple[str, str | None, list[str]]:
    """Read an AdapterHub directory's JSON files: ("language" | "task", task, NER labels). Weights are not read."""
    if not (directory / "adapter_config.json").is_file():
        raise ValueError(f"{directory.name} is not an adapter: adapter_config.json is missing")
    if not any((directory / f).is_file() for f in ADAPTER_FILES):
        raise ValueError(f"{directory.name} is not an adapter: it has no adapter.safetensors or pytorch_adapter.bin")
    head_file = directory / "head_config.json"
    if not head_file.is_file():
        return "language", None, []
    try:
        head_meta = json.loads(head_file.read_text(encoding="utf-8"))
        head = head_meta.get("config") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"{directory.name}/head_config.json is not valid JSON ({e})") from None
    if not isinstance(head, dict):
        raise ValueError(f"{directory.name}/head_config.json has no 'config' object")
    kind = head.get("head_type")
    if kind in ("tagging", "question_answering"):
        # The core loads a head under its own saved name when that differs from the adapter's; such a head could
        # replace a shared one (e.g. "ner"), so the two names must match.
        adapter_name, head_name = _saved_name(directory), head_meta.get("name")
        if head_name and adapter_name and head_name != adapter_name:
            raise ValueError(f"the head is named {head_name!r} but its adapter {adapter_name!r}; the names must match")
    if kind == "tagging":
        return "task", "ner", sorted(head.get("label2id") or {}, key=lambda k: head["label2id"][k])
    if kind == "question_answering":
        return "task", "qa", []
    if kind == "masked_lm":
        return "language", None, []
    raise ValueError(f"{directory.name} has a {kind!r} head; this app runs NER (tagging) and QA heads")


class Registry:
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
        self.scan_shipped()

    # --- backbones ---------------------------------------------------------------------------------------

    def backbone_choices(self) -> list[str]:
        from madx_core import backbones

        names = list(getattr(backbones, "CATALOG", {}) or [])
        return [self.default_backbone] + [n for n in names if n != self.default_backbone]

    def model(self, backbone: str | None = None) -> tuple[AdapterModel, object]:
        """The serving model and tokenizer of a backbone, loaded on first use and then shared by everyone."""
        from madx_core.backbones import load_tokenizer

        backbone = backbone or self.default_backbone
        if backbone not in self.backbone_choices():
            raise ValueError(f"unknown backbone {backbone!r}; choose one of: {', '.join(self.backbone_choices())}")
        with self._lock:
            if backbone not in self._models:
                model = AdapterModel.from_pretrained(backbone)
                self._models[backbone] = (model, load_tokenizer(backbone))
                self.add_hub_adapters(backbone)
            return self._models[backbone]

    def training_copy(self, backbone: str) -> tuple[AdapterModel, object]:
        """A fresh, private copy of a backbone for one training job (never the serving model)."""
        from madx_core.backbones import load_tokenizer

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
                kind, task, labels = classify_adapter_dir(d)
            except ValueError:
                continue  # a half-written asset: leave it out rather than fail at start-up
            if kind == "task":
                self._add(AdapterEntry(d.name, "task", task, "shipped", d, lang="en", labels=labels))

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

    def unique_name(self, wanted: str) -> str:
        with self._lock:
            name, i = wanted, 2
            while name in self.entries:
                name, i = f"{wanted}-{i}", i + 1
            return name

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
            raise ValueError(f"unknown {what} {name!r}; available: {known}")
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
                # A language adapter's own head (if a file has one) is never used: load only the adapter.
                model.load_adapter(entry.path, load_as=entry.name, with_head=entry.kind == "task")
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
        """Check an adapter directory, load it into the backbone's serving model, and make it selectable."""
        kind, task, labels = classify_adapter_dir(directory)
        name = self.unique_name(name)
        model, _ = self.model(backbone)
        # Reads safetensors / weights_only tensors and checks every shape before the model changes.
        model.load_adapter(directory, load_as=name, with_head=kind == "task")
        return self._add(AdapterEntry(name, kind, task, origin, directory, lang, backbone=backbone, labels=labels))

    # --- safe upload and download of adapter zips -----------------------------------------------------

    def upload_zip(self, zip_path: str | Path, backbone: str | None = None) -> AdapterEntry:
        """Extract an uploaded AdapterHub zip safely, load it, and register it under a unique name."""
        backbone = backbone or self.default_backbone
        uploads = self.work / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".upload.", dir=uploads))
        try:
            directory = extract_adapter_zip(Path(zip_path), tmp)
            saved = _saved_name(directory) or Path(zip_path).stem
            name = self.unique_name(re.sub(r"[^A-Za-z0-9_-]", "-", saved)[:40].strip("-_") or "uploaded")
            final = uploads / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(directory, final)
            try:
                return self.register_dir(final, "uploaded", name, backbone, lang=_saved_name(final))
            except Exception:
                shutil.rmtree(final, ignore_errors=True)
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def zip_adapter(self, name: str) -> Path:
        """A zip of an adapter's AdapterHub directory (`<name>/adapter_config.json`, ...), written atomically."""
        entry = self.entries.get(name)
        if entry is None or entry.path is None:
            raise ValueError(f"unknown adapter {name!r}")
        out = self.work / "zips" / f"{name}.zip"
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip", dir=out.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in sorted(entry.path.iterdir()):
                    if f.is_file():
                        zf.write(f, f"{name}/{f.name}")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return out


def _saved_name(directory: Path) -> str | None:
    try:
        return json.loads((directory / "adapter_config.json").read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        return None


def extract_adapter_zip(zip_path: Path, dest: Path) -> Path:
    """Extract a zip into `dest`, refusing anything that could escape it; return the adapter directory inside.

    Every member is checked before anything is written: no absolute paths, no `..`, no symlinks or other special
    files, bounded sizes (declared and actual). Nothing in it is executed or unpickled here.
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
        written = 0
        for info in members:
            target = (dest / info.filename).resolve()
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):  # count real bytes: declared sizes can lie
                    written += len(chunk)
                    if written > MAX_UNZIPPED_BYTES:
                        raise ValueError("refused: the zip unpacks to more than the size limit")
                    out.write(chunk)
    candidates = [p.parent for p in dest.rglob("adapter_config.json")]
    if not candidates:
        raise ValueError("the zip holds no adapter: adapter_config.json is missing (zip an AdapterHub adapter folder)")
    if len(candidates) > 1:
        raise ValueError("the zip holds several adapters; upload one adapter per zip")
    return candidates[0]


# ----------------------------------------------------------------------------------------------------------
# Results: the shipped results.json plus the evaluations run in the app


class Results:
    """Rows {system, source, target, task, metric, value, seed, ...}: shipped ones and those added in the app."""

    def __init__(self, assets: Path, work_dir: Path):
        self.shipped_file = assets / "results.json"
        self.app_file = work_dir / "app_results.json"
        self._lock = threading.Lock()

    @staticmethod
    def _read(path: Path) -> list[dict]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        rows = data.get("rows") if isinstance(data, dict) else None
        return [r for r in rows or [] if isinstance(r, dict) and {"system", "target", "metric", "value"} <= set(r)]

    def rows(self) -> list[dict]:
        return [{**r, "origin": "shipped"} for r in self._read(self.shipped_file)] + [
            {**r, "origin": "app"} for r in self._read(self.app_file)
        ]

    def add(self, rows: list[dict]) -> None:
        with self._lock:
            kept = self._read(self.app_file) + rows
            atomic_write_text(self.app_file, json.dumps({"rows": kept}, indent=1, ensure_ascii=False))

    def csv(self, path: Path) -> Path:
        fields = ["system", "source", "target", "task", "metric", "value", "seed", "trainable_parameters", "origin"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write_text(path, buf.getvalue())
        return path


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
    return text.splitlines()[0] if text else type(e).__name__


# ----------------------------------------------------------------------------------------------------------
# The whole shared state


@dataclass
class AppState:
    registry: Registry
    results: Results
    jobs: JobRunner


def create_state(assets: Path | None = None, work_dir: Path | None = None) -> AppState:
    registry = Registry(assets, work_dir)
    registry.work.mkdir(parents=True, exist_ok=True)
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
