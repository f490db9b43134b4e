"""Adapters in and out as zips, safely: the upload side of the app's `Registry` (quotas, unzip, register, download).

An upload keeps only the AdapterHub files (`adapterhub.FILES`), is checked member by member before anything is
written, counts against per-visitor and app-wide quotas, and gets its own reserved name; a refused upload leaves no
folder, no name and no loaded module behind.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from pathlib import Path

from madx_core import adapterhub
from madx_core.atomic import atomic_open

from .entry import AdapterEntry
from .inputs import LANG_RE
from .limits import (
    MAX_UNZIPPED_BYTES,
    MAX_UPLOAD_BYTES,
    MAX_UPLOADED_ADAPTERS,
    MAX_UPLOADED_BYTES,
    UPLOAD_WINDOW_S,
    UPLOADS_PER_VISITOR,
)


class Uploads:
    """Upload quotas, `upload_zip` and `zip_adapter`; part of `Registry` (it uses the registry's names and lock)."""

    def _init_uploads(self) -> None:
        self.upload_quota = (UPLOADS_PER_VISITOR, UPLOAD_WINDOW_S, MAX_UPLOADED_ADAPTERS, MAX_UPLOADED_BYTES)
        self._uploads_by: dict[str, list[float]] = {}  # visitor -> times of their accepted uploads
        self._uploads_in_flight = 0  # uploads being checked and loaded now (they count against the app-wide cap)

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
            saved = adapterhub.inspect(directory).name or Path(zip_path).stem
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
            for file_name in adapterhub.FILES:
                if (entry.path / file_name).is_file():
                    zf.write(entry.path / file_name, f"{name}/{file_name}")
        return out


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
            if not i.is_dir() and str(Path(i.filename).parent) == folder and Path(i.filename).name in adapterhub.FILES
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
