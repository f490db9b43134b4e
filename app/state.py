"""What every user of the app shares: the adapter registry, results, the training runner and the long-text lane.

Training mutates a model (train mode, requires_grad), so jobs run on a private copy of the backbone
(`training_models`), one job at a time; the finished adapter is then loaded into the registry's serving model and
appears in every user's dropdowns.

The app is public, so what keeps visitors apart (README, "Security") is spread over small modules: `uploads`
(only AdapterHub files, reserved names, quotas), `jobs` (one job, a long-text lane), `results` (per-session rows),
`inputs` (checked text and names) and `errors` (no server path in a message); the caps are in `limits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from madx_core.model import AdapterModel

from .jobs import JobRunner, Lanes
from .registry import Registry
from .results import Results


@dataclass
class AppState:
    registry: Registry
    results: Results
    jobs: JobRunner
    lanes: Lanes = field(default_factory=Lanes)
    # backbone -> (model, tokenizer): one private training copy per backbone, kept between jobs (they never overlap)
    training_models: dict[str, tuple[AdapterModel, object]] = field(default_factory=dict)


def create_state(assets: Path | None = None, work_dir: Path | None = None) -> AppState:
    registry = Registry(assets, work_dir)
    registry.work.mkdir(parents=True, exist_ok=True)
    registry.downloads.mkdir(parents=True, exist_ok=True)
    return AppState(registry, Results(registry.assets, registry.work), JobRunner())
