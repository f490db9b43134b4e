"""Helpers the test modules share (fixtures live in conftest.py): tiny tokenizers, backbones and data built in memory,
the CLI in a subprocess, the app on a free port, and the reference AdapterHub library in its own virtualenv.

Unit tests build everything here in memory or in tmp_path; only tests marked `integration` read the shared data.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "assets" / "adapters"  # the shipped adapters: lang/<code>, lang_noinv/<code>, task/<name>
# XLM-R's special tokens (bos_token="<s>", ...), as the reference tokenizer and the rebuilt one have them.
_SPECIALS = dict(bos="<s>", eos="</s>", cls="<s>", sep="</s>", pad="<pad>", unk="<unk>", mask="<mask>")
SPECIAL_TOKENS = {f"{role}_token": token for role, token in _SPECIALS.items()}

# ----------------------------------------------------------------------------------------------------------
# Tiny tokenizers and backbones


def make_word_tokenizer(words):
    """A tiny whole-word tokenizer built in memory (no downloads), with XLM-R's special tokens.

    Its vocabulary is the pieces of `words` as its pre-tokenizer cuts them ("Kano." gives "Kano" and ".")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for w in sorted({piece for word in words for piece in re.findall(r"\w+|[^\w\s]+", word)}):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_config(vocab_size: int, kind: str = "xlmr", dropout: float = 0.1):
    """A 2-layer BERT or XLM-R config of hidden size 32: a training step takes milliseconds on a CPU."""
    from transformers import BertConfig, XLMRobertaConfig

    config_class = XLMRobertaConfig if kind == "xlmr" else BertConfig
    return config_class(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        pad_token_id=1,
        max_position_embeddings=256,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


def tiny_model(tokenizer, dropout: float = 0.1, seed: int = 0):
    """A random tiny XLM-R AdapterModel with a masked-LM head (language adapters train through it)."""
    import madx_core as mx

    torch.manual_seed(seed)
    return mx.AdapterModel.from_config(tiny_config(len(tokenizer), dropout=dropout), mlm_head=True)


def save_tiny_backbone(folder: Path, tokenizer, kind: str = "xlmr", dropout: float = 0.1) -> Path:
    """A random tiny backbone with its MLM head and `tokenizer`, saved as a local checkpoint directory."""
    from transformers import BertForMaskedLM, XLMRobertaForMaskedLM

    torch.manual_seed(0)
    model_class = XLMRobertaForMaskedLM if kind == "xlmr" else BertForMaskedLM
    model_class(tiny_config(len(tokenizer), kind, dropout)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def spread(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Adapters start near the identity; random weights of this size make a wrong formula or a mix-up visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


# ----------------------------------------------------------------------------------------------------------
# Tiny data, generated (unit tests never read the shared data)

PEOPLE = [["Amina", "Yusuf"], ["John", "Smith"], ["Juma", "Hassani"], ["Ngozi"], ["Maria", "Lopez"], ["Wanjiru"]]
PLACES = [["Kano"], ["Geneva"], ["Nairobi"], ["Dar", "es", "Salaam"], ["Paris"], ["Lagos"], ["Mombasa"]]
ORGS = [["World", "Health", "Organization"], ["UN"], ["Reuters"], ["Benki", "ya", "Dunia"], ["Safaricom"]]
# sentence templates: the slots PER, LOC and ORG take a name from the lists above, every other word is O
TEMPLATES = [
    ["PER", "visited", "LOC", "."],
    ["PER", "works", "for", "ORG", "in", "LOC", "."],
    ["ORG", "said", "on", "Monday", "that", "PER", "left", "LOC", "."],
    ["The", "office", "of", "ORG", "is", "in", "LOC", "."],
    ["PER", "and", "PER", "met", "in", "LOC", "yesterday", "."],
]
# Swahili sentences in the manner of the UDHR: real text has frequent and rare words, which an MLM learns quickly
SW_SENTENCES = [
    "Watu wote wamezaliwa huru, hadhi na haki zao ni sawa.",
    "Wote wamejaliwa akili na dhamiri, hivyo yapasa watendeane kindugu.",
    "Kila mtu ana haki ya kuishi, haki ya uhuru na usalama wa nafsi yake.",
    "Mtu yeyote hatashikwa utumwani au katika hali ya utumwa.",
    "Kila mtu ana haki ya kutambuliwa kama binadamu mbele ya sheria.",
    "Watu wote ni sawa mbele ya sheria na wana haki ya kulindwa na sheria bila ubaguzi.",
    "Kila mtu ana haki ya kuwa na uhuru wa kwenda anakotaka ndani ya nchi yake.",
    "Kila mtu ana haki ya elimu, na elimu itakuwa bure angalau katika ngazi za mwanzo.",
]


def ner_sentences(n: int, seed: int = 0):
    """`n` CoNLL-style sentences (IOB2, PER/LOC/ORG) from a few templates and names: a tiny model learns them."""
    from madx_core.data import NerSentence

    rng = random.Random(seed)
    pools = {"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}
    out = []
    for _ in range(n):
        tokens, labels = [], []
        for slot in rng.choice(TEMPLATES):
            if slot in pools:
                words = rng.choice(pools[slot])
                labels += [f"B-{slot}"] + [f"I-{slot}"] * (len(words) - 1)
            else:
                words = [slot]
                labels.append("O")
            tokens += words
        out.append(NerSentence(tokens, labels))
    return out


def sw_texts(n: int, seed: int = 0) -> list[str]:
    """`n` lines of Swahili unlabelled text, one or two sentences each."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(SW_SENTENCES, rng.randint(1, 2))) for _ in range(n)]


def qa_examples(n: int, seed: int = 0):
    """`n` SQuAD-style examples: "Where does X live?" over a context that says where X lives, among other facts."""
    from madx_core.data import QAExample

    rng = random.Random(seed)
    out = []
    for i in range(n):
        person, place, office = (" ".join(words) for words in rng.sample(PEOPLE, 1) + rng.sample(PLACES, 2))
        org = " ".join(rng.choice(ORGS))
        before = f"{org} has an office in {office}. "
        context = before + f"{person} lives in {place} and works for {org}."
        start = len(before) + len(person) + len(" lives in ")
        answers = [{"text": place, "answer_start": start}]
        out.append(QAExample(f"q{i}", "t", context, f"Where does {person} live?", answers, article=i))
    return out


# ----------------------------------------------------------------------------------------------------------
# Processes and servers


def madx(
    args: list[str], *, ok: bool = True, timeout: float = 600, module: str = "madx_core", **kwargs
) -> subprocess.CompletedProcess:
    """`python -m madx_core ARGS` (or another `module`, e.g. a script) from the repository, offline; with `ok`, it
    must exit 0."""
    env = {**os.environ, "MADX_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={**env, **kwargs.pop("env", {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if ok:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_app(tmp: Path):
    """The app on a free loopback port, on a copy of the shipped adapters and results and an empty work folder.

    Returns the Gradio Blocks (`demo.local_url`, `demo.state`); the caller closes it."""
    from app import build_app, launch_kwargs

    shipped = REPO / "assets"
    assert (shipped / "adapters" / "task" / "ner").is_dir(), "the shipped adapters (assets/adapters) are missing"
    torch.set_num_threads(2)
    shutil.copytree(shipped / "adapters", tmp / "assets" / "adapters")
    for name in ("results.json", "recipes.json"):
        shutil.copy(shipped / name, tmp / "assets" / name)
    demo = build_app(assets=tmp / "assets", work_dir=tmp / "work")
    demo.queue().launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **launch_kwargs(demo.state))
    return demo


def app_error(fn, *args, **kwargs) -> str:
    """The message of the error that an app endpoint answers (`fn` is e.g. client.predict); it must answer one."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        fn(*args, **kwargs)
    return str(e.value)


def zip_adapter(src: Path, out: Path, folder: str, edit=None, extra: dict | None = None) -> Path:
    """A zip of the adapter folder `src` as `folder/<file>`, the way a visitor uploads one; `edit(file_name, bytes) ->
    bytes | None` changes or drops a file, `extra` adds files."""
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(src.iterdir()):
            if f.name.startswith("."):
                continue
            data = f.read_bytes() if edit is None else edit(f.name, f.read_bytes())
            if data is not None:
                zf.writestr(f"{folder}/{f.name}", data)
        for name, data in (extra or {}).items():
            zf.writestr(f"{folder}/{name}", data)
    return out


def json_edit(file_name: str, change):
    """An `edit` for zip_adapter that replaces one JSON file of the adapter by `change(its JSON)`."""

    def edit(name: str, data: bytes) -> bytes:
        return json.dumps(change(json.loads(data))).encode() if name == file_name else data

    return edit


def reference_python() -> str:
    """The Python of the reference library's virtualenv (adapters 1.3.0 on transformers 4.57)."""
    python = os.environ.get("MADX_REF_PYTHON") or str(REPO / ".ref-venv" / "bin" / "python")
    if not Path(python).exists():
        pytest.fail(f"the reference library's virtualenv is missing ({python}): run bash scripts/make_ref_venv.sh")
    return python


def run_reference(base: Path, adapters: list[Path], stack: str, head: str, inputs: Path, out: Path) -> torch.Tensor:
    """The reference library's logits of `head` with `stack` active, the adapters loaded from our directories."""
    from safetensors.torch import load_file

    args = [reference_python(), str(REPO / "tests" / "reference_check.py"), "--base", str(base)]
    for directory in adapters:
        args += ["--adapter", str(directory)]
    args += ["--stack", stack, "--head", head, "--inputs", str(inputs), "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return load_file(out)["output"]
