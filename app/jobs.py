"""Sharing the CPU: training jobs run one at a time in the background, and long texts take turns on one lane."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .entry import AdapterEntry
from .errors import Busy, one_line
from .limits import CHUNK_CHARS, LONG_TEXT_CHARS, MAX_LONG_REQUESTS, MAX_REQUEST_SECONDS, MAX_TRAIN_SECONDS


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
                job.state, job.message = "cancelled", f"cancelled; nothing was saved (clean-up: {one_line(e)})"
                return  # the message goes to the user; the app keeps serving
            job.state, job.message = "failed", f"training failed: {one_line(e)}"
        finally:
            job.finished.set()

    def cancel(self, job_id: int | None) -> bool:
        job = self._current
        if job is None or job.id != job_id or job.finished.is_set():
            return False
        job.cancel.set()
        return True


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
