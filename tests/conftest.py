"""Shared fixtures: the real data (through MADX_DATA_DIR), the reference tokenizer, tiny models and tokenizers."""

import os
from pathlib import Path

import pytest
import torch

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
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def make_word_tokenizer(words):
    """A tiny whole-word tokenizer built in memory (no downloads), with XLM-R's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for w in sorted(set(words)):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


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
