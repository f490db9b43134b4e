"""Shared fixtures: the real data (through MADX_DATA_DIR) and the reference tokenizer, for the integration tests.

Helpers that build tiny models, tokenizers and data in memory are in helpers.py."""

import os
from pathlib import Path

import pytest
import torch
from helpers import SPECIAL_TOKENS

torch.set_num_threads(2)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MADX_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("MADX_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "README.md").is_file():
        pytest.fail(f"the shared data is missing: set MADX_DATA_DIR (now {path})")
    return path


@pytest.fixture(scope="session")
def reference_tokenizer(data_dir):
    """The reference multilingual-e5-small tokenizer: a test fixture only, never used by the project at run time."""
    from transformers import PreTrainedTokenizerFast

    path = data_dir.parent / "reference" / "multilingual-e5-small.tokenizer.json"
    return PreTrainedTokenizerFast(tokenizer_file=str(path), **SPECIAL_TOKENS)


def pytest_terminal_summary(terminalreporter):
    """Say at the end of the run, not only in the skip list, that the browser test did not run."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not Path("/usr/bin/chromium").exists() and any("test_browser" in str(r.location[0]) for r in skipped):
        terminalreporter.write_line(
            "NOTE: the browser test (tests/test_browser.py) was skipped: chromium is not installed "
            "(Debian: apt-get install -y chromium)",
            yellow=True,
            bold=True,
        )


def pytest_collection_modifyitems(items):
    """Only integration tests may read the shared data: unit tests must run where it is missing (`-m "not
    integration"`), so a test that asks for it unmarked is a mistake in the test, said at collection."""
    for item in items:
        wants_data = {"data_dir", "reference_tokenizer"} & set(getattr(item, "fixturenames", ()))
        if wants_data and item.get_closest_marker("integration") is None:
            raise pytest.UsageError(
                f"{item.nodeid} reads the shared data ({', '.join(wants_data)}): mark it integration"
            )
