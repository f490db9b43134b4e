"""The app as a public Space: what an anonymous visitor (or a crowd of them) must not be able to do.

One test per case of the security review (issue #13); each failed on the code before the fix. The app runs on
loopback with the real offline backbone, as in test_app.py; the memory case runs the core in its own process so that
its peak memory can be read.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import torch
from gradio_client import Client, handle_file
from helpers import REPO, SHIPPED, app_error, json_edit, serve_app, zip_adapter
from safetensors.torch import load_file, save_file

import madx_core as mx

pytestmark = pytest.mark.integration

EN, NER = SHIPPED / "lang" / "en", SHIPPED / "task" / "ner"
TEXT = "Amina Yusuf joined the World Health Organization in Geneva after ten years at a hospital in Kano."
CONLL = "Amina B-PER\nlives O\nin O\nKano B-LOC\n. O\n"
# The AdapterHub files: all that an uploaded folder may keep (besides the app's own note) and a download may hold:
# the two configs, and the adapter's and the head's weights in either format.
CONFIGS = {"adapter_config.json", "head_config.json"}
WEIGHTS = {f"{stem}.safetensors" for stem in ("adapter", "model_head")} | {
    "pytorch_adapter.bin",
    "pytorch_model_head.bin",
}
ADAPTERHUB_FILES = CONFIGS | WEIGHTS


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(demo, client, tmp): the app on a free port with its own assets and work directory."""
    tmp = tmp_path_factory.mktemp("secure")
    demo = serve_app(tmp)
    demo.state.registry.upload_quota = (1000, 3600, 1000, 2**40)  # the quota test sets its own
    client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=str(tmp / "downloads"))
    yield demo, client, tmp
    demo.state.lanes.stop()
    demo.close()


def _uploaded_name(message: str) -> str:
    return re.search(r"\*\*(.+?)\*\*", message).group(1)


# ----------------------------------------------------------------------------------------------------------
# 1. Stored script injection: nothing from an upload is served; errors show no server path


def test_uploaded_files_are_never_served_and_errors_hide_paths(app):
    demo, client, tmp = app
    reg = demo.state.registry
    page = b"<html><script>fetch('/steal?c='+document.cookie)</script></html>"
    zipped = zip_adapter(EN, tmp / "notes.zip", "en", extra={"notes.html": page, "README.md": b"# hi"})
    name = _uploaded_name(client.predict(handle_file(str(zipped)), api_name="/upload_adapter"))
    kept = reg.work / "uploads" / name
    assert {f.name for f in kept.iterdir()} <= ADAPTERHUB_FILES | {".app.json"}
    assert not (kept / "notes.html").exists()

    with httpx.Client(base_url=demo.local_url) as http:
        # What the app made is served from its downloads folder ...
        made = reg.zip_adapter(name)
        assert made.parent == reg.downloads
        assert http.get(f"gradio_api/file={made}").status_code == 200
        with zipfile.ZipFile(made) as zf:
            assert {Path(n).name for n in zf.namelist()} <= ADAPTERHUB_FILES
        # ... and nothing of an upload is, whatever it is.
        for f in ("notes.html", "adapter_config.json"):
            assert http.get(f"gradio_api/file={kept / f}").status_code in (403, 404)

    # An error raised deep in the loader does not show where the app lives.
    no_head_weights = zip_adapter(NER, tmp / "nohead.zip", "nohead", edit=_skip("model_head.safetensors"))
    message = app_error(client.predict, handle_file(str(no_head_weights)), api_name="/upload_adapter")
    assert "model_head.safetensors" in message
    for secret in (str(tmp), str(reg.work), str(REPO)):
        assert secret not in message


def _skip(file_name: str):
    return lambda name, data: None if name == file_name else data


# ----------------------------------------------------------------------------------------------------------
# 2. Head hijack: an upload's head goes under the upload's own name, never over a shared head


def test_upload_cannot_replace_a_shared_head(app):
    demo, client, tmp = app
    model, _ = demo.state.registry.model()
    _, before = client.predict(TEXT, api_name="/ner")
    shared_head = model.heads["ner"]

    def hijack(name: str, data: bytes) -> bytes:
        if name == "adapter_config.json":  # no adapter name, so the head's own name ("ner") would be used
            meta = json.loads(data)
            meta.pop("name", None)
            return json.dumps(meta).encode()
        if name == "head_config.json":
            meta = json.loads(data)
            labels = ["<img src=x onerror=alert(1)>"] * meta["config"]["num_labels"]
            meta["config"]["label2id"] = {f"B-{i}{label}": i for i, label in enumerate(labels)}
            return json.dumps({**meta, "name": "ner"}).encode()
        if name == "model_head.safetensors":  # every token gets label 1 with certainty
            state = load_file(str(NER / name))
            bias = next(k for k in state if k.endswith("bias") and state[k].numel() == 7)
            state[bias] = torch.tensor([-1e4, 1e4, -1e4, -1e4, -1e4, -1e4, -1e4], dtype=state[bias].dtype)
            out = tmp / "hijack_head.safetensors"
            save_file(state, str(out))
            return out.read_bytes()
        return data

    zipped = zip_adapter(NER, tmp / "hijack.zip", "hijack", edit=hijack)
    name = _uploaded_name(client.predict(handle_file(str(zipped)), api_name="/upload_adapter"))
    assert name != "ner"
    assert model.heads["ner"] is shared_head
    _, after = client.predict(TEXT, api_name="/ner")
    assert after == before
    # The upload works under its own name, with its own head.
    _, own = client.predict(TEXT, "", "none", name, api_name="/ner")
    assert own and all(e["score"] > 0.99 for e in own)


def test_core_load_adapter_head_as_and_refusing_clashes(tmp_path):
    """madx_core's side of it: `head_as` names the head, `exist_ok=False` refuses a loaded name and changes nothing."""
    from transformers import BertConfig

    from madx_core.adapterhub import load_adapter

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    model = mx.AdapterModel.from_config(config)
    model.add_adapter("ner", mx.AdapterConfig(reduction_factor=16))
    model.add_tagging_head("ner", ["O", "B-PER"])
    model.save_adapter(tmp_path / "ner", "ner")
    shared = model.heads["ner"]
    with pytest.raises(ValueError, match="already loaded"):
        load_adapter(model, tmp_path / "ner", exist_ok=False)
    assert model.heads["ner"] is shared
    assert load_adapter(model, tmp_path / "ner", load_as="mine", head_as="mine", exist_ok=False) == "mine"
    assert model.heads["ner"] is shared and "mine" in model.heads and "mine" in model.adapters
    with pytest.raises(ValueError, match="a head named 'ner' is already loaded"):
        load_adapter(model, tmp_path / "ner", load_as="other", head_as="ner", exist_ok=False)
    assert "other" not in model.adapters


# ----------------------------------------------------------------------------------------------------------
# 3. Memory from a config: refused before anything is allocated, and memory stays where it was

MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, tempfile
    from pathlib import Path
    import torch
    from transformers import BertConfig
    import madx_core as mx
    from madx_core.adapterhub import load_adapter

    torch.manual_seed(0)
    config = BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64)
    model = mx.AdapterModel.from_config(config)
    root = Path(tempfile.mkdtemp())
    model.add_adapter("t", mx.AdapterConfig(reduction_factor=16))
    model.add_tagging_head("t", ["O", "B-PER"])
    model.save_adapter(root / "t", "t")
    model.delete_adapter("t")

    def variant(name, file, change):
        import shutil
        d = root / name
        shutil.copytree(root / "t", d)
        meta = json.loads((d / file).read_text())
        change(meta)
        (d / file).write_text(json.dumps(meta))
        return d

    cases = {
        "num_labels": variant("a", "head_config.json", lambda m: m["config"].update(num_labels=1_500_000,
                                                                                   label2id=None)),
        "layers": variant("b", "head_config.json", lambda m: m["config"].update(layers=30_000)),
        "reduction_factor": variant("c", "adapter_config.json", lambda m: m["config"].update(
            reduction_factor=0.0001)),
    }
    def peak_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    try:  # reset the peak to the current size (Linux), so that the peak measures only the loads below
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = peak_mb()
    messages = {}
    for what, d in cases.items():
        try:
            load_adapter(model, d, load_as=what)
            messages[what] = "loaded"
        except ValueError as e:
            messages[what] = str(e)
    grown_mb = peak_mb() - before
    print(json.dumps({"messages": messages, "peak_growth_mb": grown_mb, "adapters": sorted(model.adapters)}))
    """
)


def test_config_claiming_huge_modules_is_refused_before_allocation():
    env = {**os.environ, "MADX_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(m != "loaded" for m in report["messages"].values()), report
    assert report["adapters"] == []
    # Unchecked, each config builds 380-660 MB of modules; checked on the meta device, nothing is allocated.
    assert report["peak_growth_mb"] < 40, report


def test_upload_with_a_huge_config_is_refused_quickly(app):
    demo, client, tmp = app
    huge = json_edit("head_config.json", lambda m: {**m, "config": {**m["config"], "num_labels": 1_500_000}})
    message = app_error(
        client.predict, handle_file(str(zip_adapter(NER, tmp / "huge.zip", "huge", huge))), api_name="/upload_adapter"
    )
    assert "num_labels" in message


# ----------------------------------------------------------------------------------------------------------
# 4. Server paths as backbone: only the app's own backbones


@pytest.mark.parametrize("where", ["assets", "/tmp", "work", "../../etc"])
def test_backbone_must_be_one_of_the_apps_own(app, monkeypatch, where):
    demo, client, tmp = app
    reg = demo.state.registry
    path = {"assets": str(REPO / "assets"), "work": str(reg.work)}.get(where, where)
    data = tmp / "train.conll"
    data.write_text(CONLL, encoding="utf-8")
    loaded = []  # every backbone the app loads while the requests below run, for serving or for training
    original = mx.AdapterModel.from_pretrained.__func__

    def recording(cls, name, *args, **kwargs):
        loaded.append(name)
        return original(cls, name, *args, **kwargs)

    monkeypatch.setattr(mx.AdapterModel, "from_pretrained", classmethod(recording))
    trained = reg.work / "trained"
    folders_before = set(trained.iterdir()) if trained.is_dir() else set()
    message = app_error(
        client.predict, handle_file(str(data)), "ner", "x", "none", 1, 5e-4, path, api_name="/train_task_adapter"
    )
    assert "unknown backbone" in message and path not in message
    assert "unknown backbone" in app_error(client.predict, TEXT, path, api_name="/ner")
    zipped = zip_adapter(EN, tmp / "bb.zip", "en")
    assert "unknown backbone" in app_error(client.predict, handle_file(str(zipped)), path, api_name="/upload_adapter")
    assert loaded == []
    assert (set(trained.iterdir()) if trained.is_dir() else set()) == folders_before


# ----------------------------------------------------------------------------------------------------------
# 6. Upload quota per visitor and for the app; Gradio's copy of an upload is removed


def test_upload_quota_and_cache_clean_up(app):
    demo, client, tmp = app
    from gradio.utils import get_upload_folder

    reg = demo.state.registry
    assert demo.delete_cache is not None  # Gradio's upload cache is emptied periodically and at shutdown
    saved = reg.upload_quota
    try:
        used = reg.uploads_by("127.0.0.1")
        reg.upload_quota = (used + 2, 3600, 1000, 2**40)
        zips = [zip_adapter(EN, tmp / f"quota{i}.zip", f"quota{i}") for i in range(3)]
        for z in zips[:2]:
            client.predict(handle_file(str(z)), api_name="/upload_adapter")
        assert "upload limit" in app_error(client.predict, handle_file(str(zips[2])), api_name="/upload_adapter")

        uploaded = sum(e.origin == "uploaded" for e in reg.entries.values())
        reg.upload_quota = (1000, 3600, uploaded, 2**40)
        assert "maximum" in app_error(client.predict, handle_file(str(zips[2])), api_name="/upload_adapter")
    finally:
        reg.upload_quota = saved

    # No copy of the uploaded zips stays in Gradio's upload cache.
    digests = {hashlib.sha256(z.read_bytes()).hexdigest() for z in zips}
    cached = [f for f in Path(get_upload_folder()).rglob("*.zip") if f.is_file()]
    assert not [f for f in cached if hashlib.sha256(f.read_bytes()).hexdigest() in digests]


# ----------------------------------------------------------------------------------------------------------
# 7. Restart: trained and uploaded adapters are registered again, and their names stay taken


def test_restart_registers_trained_and_uploaded_adapters_again(app):
    demo, client, tmp = app
    reg = demo.state.registry
    name = _uploaded_name(
        client.predict(handle_file(str(zip_adapter(NER, tmp / "keep.zip", "keepme"))), api_name="/upload_adapter")
    )
    # What a training job does at its end: write the adapter, then register it.
    model, _ = reg.model()
    model.add_adapter("fresh", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
    trained_dir = reg.work / "trained" / "fresh"
    model.save_adapter(trained_dir, "fresh", with_head=False)
    model.delete_adapter("fresh")
    reg.register_dir(trained_dir, "trained here", "fresh", reg.default_backbone, lang="fresh")
    (reg.work / "uploads" / "junk").mkdir()
    (reg.work / "uploads" / "junk" / "README.md").write_text("not an adapter")
    (reg.work / "uploads" / ".upload.cutoff").mkdir()

    restarted = type(reg)(reg.assets, reg.work)  # what the app builds on a start over the same folders
    up, tr = restarted.entries[name], restarted.entries["fresh"]
    assert (up.origin, up.kind, up.task, up.backbone) == ("uploaded", "task", "ner", reg.default_backbone)
    assert (tr.origin, tr.kind) == ("trained here", "language")
    assert "junk" not in restarted.entries
    assert not (reg.work / "uploads" / ".upload.cutoff").exists()
    # Training or uploading the same name again gets a new name: the old folder is never overwritten.
    assert restarted.reserve("fresh") == "fresh-2" and restarted.reserve(name) != name


# ----------------------------------------------------------------------------------------------------------
# 8. Visitors' evaluations: their own session only, marked with their size; text checked; CSV inert


def test_evaluations_stay_with_their_visitor_and_csv_is_inert(app):
    demo, client, tmp = app
    one = tmp / "one.conll"
    one.write_text(CONLL, encoding="utf-8")
    args = ("none", "ner", "", handle_file(str(one)))
    backbone = demo.state.registry.default_backbone
    for bad in ('=HYPERLINK("http://evil.example","x")', "x" * 100_000):
        message = app_error(client.predict, *args, bad, backbone, 10, api_name="/evaluate")
        assert "language code" in message and len(message) < 200
    rows, *_, table, csv_file = client.predict(*args, "sw", backbone, 10, api_name="/evaluate")
    assert rows[0]["system"] == "app: ner (1 examples)"
    assert any(r[0] == "app: ner (1 examples)" for r in table["data"])
    # Another visitor sees only the shared, shipped results.
    other = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=str(tmp / "other"))
    *_, other_table, other_csv = other.predict("ner", "f1", "madx", api_name="/scores")
    assert not any(str(r[0]).startswith("app:") for r in other_table["data"])
    assert "app:" not in Path(other_csv).read_text(encoding="utf-8")

    results = demo.state.results  # the formulas cannot come through the API: write them as the app writes rows
    row = {"system": '=HYPERLINK("http://evil.example")', "source": "@x", "target": "+1", "task": "-2"}
    results.add([{**row, "metric": "f1", "value": 1.0}], "visitor")
    text = results.csv("visitor").read_text(encoding="utf-8")
    cells = [c for line in text.splitlines()[1:] for c in line.split(",")]
    assert not [c for c in cells if c.lstrip('"').startswith(("=", "+", "-", "@"))], text
    assert "'=HYPERLINK" in text


# ----------------------------------------------------------------------------------------------------------
# 9. Same-name uploads at once: every one gets its own name and folder


def test_simultaneous_uploads_of_one_name_all_survive(app):
    demo, client, tmp = app
    reg = demo.state.registry
    zips = [zip_adapter(EN, tmp / f"race{i}.zip", "race") for i in range(4)]
    _, shipped = client.predict(TEXT, "", "en", api_name="/ner")
    with cf.ThreadPoolExecutor(4) as pool:
        messages = list(pool.map(lambda z: client.predict(handle_file(str(z)), api_name="/upload_adapter"), zips))
    names = [_uploaded_name(m) for m in messages]
    assert len(set(names)) == 4
    for name in names:
        assert (reg.work / "uploads" / name / "adapter_config.json").is_file()
        _, entities = client.predict(TEXT, "", name, api_name="/ner")
        assert entities == shipped  # each one is the English adapter it was zipped from


# ----------------------------------------------------------------------------------------------------------
# 5. Starvation: four maximum-size texts in flight do not hold up a one-sentence request (last in this file:
# the long texts run on until the app closes)


def test_short_request_is_answered_while_long_texts_run(app):
    demo, client, tmp = app
    max_text_chars = 200_000  # the documented cap on a NER text (README, Security)
    long_text = (TEXT + "\n") * ((max_text_chars - 1000) // (len(TEXT) + 1))
    longs = [Client(demo.local_url, verbose=False, analytics_enabled=False) for _ in range(4)]
    jobs = [c.submit(long_text, api_name="/ner") for c in longs]
    deadline = time.monotonic() + 60
    while getattr(getattr(demo.state, "lanes", None), "long_requests", 4) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # all four are computing (or waiting for their turn) now

    other = Client(demo.local_url, verbose=False, analytics_enabled=False)
    started = time.monotonic()
    _, entities = other.predict("Amina lives in Kano.", api_name="/ner")
    waited = time.monotonic() - started
    assert entities and waited < 10, f"the one-sentence request waited {waited:.1f} s"
    assert not any(job.done() for job in jobs)  # the long texts were still running
    # A fifth long text is told to come back, rather than taking a worker that short requests need.
    assert "busy with other long texts" in app_error(client.predict, long_text, api_name="/ner")
