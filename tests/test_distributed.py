"""Scale-out on a tiny backbone: 2 processes under `accelerate launch` (CPU, gloo) give the weights of 1 process with
the same global batch and seed; grad-accum gives the weights of one big batch; a killed run resumes to the same weights.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import madx, make_word_tokenizer, ner_sentences, save_tiny_backbone, sw_texts, tiny_model
from safetensors.torch import load_file

import madx_core as mx
from madx_core import data as D
from madx_core.mlm import TextStream, train_language_adapter
from madx_core.training import Cancelled, TrainConfig, train_task_adapter

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "MADX_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny backbone directory without dropout (a process's dropout masks depend on the rows it holds), and data."""
    d = tmp_path_factory.mktemp("dist")
    sents, texts = ner_sentences(40), sw_texts(40)
    tokenizer = make_word_tokenizer([w for s in sents for w in s.tokens] + [w for t in texts for w in t.split()])
    save_tiny_backbone(d / "tiny", tokenizer, dropout=0.0)
    (d / "sw.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    D.write_conll(d / "en.txt", [s.tokens for s in sents], [s.labels for s in sents])
    return d, tokenizer, texts, sents


def command(args: list[str], processes: int) -> list[str]:
    """`python -m madx_core ...`, or the same under `accelerate launch --multi_gpu --num_processes N` (torchrun)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    return (launch if processes > 1 else [sys.executable]) + ["-m", "madx_core", *args, "--json"]


def run_cli(args: list[str], processes: int) -> subprocess.CompletedProcess:
    result = subprocess.run(command(args, processes), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_same_tensors(a: Path, b: Path, name: str) -> None:
    x, y = load_file(a / name), load_file(b / name)
    assert x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")


def test_two_processes_train_the_same_adapters_as_one(tmp_path, setup):
    d, *_ = setup
    common = ["--backbone", str(d / "tiny"), "--steps", "6", "--batch-size", "8", "--seed", "3", "--max-length", "32"]
    common += ["--precision", "fp32"]  # the same update to 1e-4 needs fp32 (train-lang's auto is bf16 on some CPUs)
    lang = ["train-lang", "--lang", "sw", "--text", str(d / "sw.txt"), "--lr", "1e-3", *common]
    outs = {}
    for n in (1, 2):
        run = run_cli([*lang, "--out", str(tmp_path / f"p{n}" / "sw")], n)
        report = json.loads(run.stdout)  # one JSON document: only the main process prints
        assert report["processes"] == n and report["steps"] == 6
        task = ["train-task", "--task", "ner", "--data", str(d / "en.txt"), "--lr", "5e-3", *common]
        task += ["--lang-adapter", str(tmp_path / f"p{n}" / "sw"), "--out", str(tmp_path / f"p{n}" / "ner")]
        assert json.loads(run_cli(task, n).stdout)["processes"] == n
        # Only the main process writes: the two outputs and nothing else (no second temporary directory, no checkpoint)
        assert sorted(p.name for p in (tmp_path / f"p{n}").iterdir()) == ["ner", "sw"]
        outs[n] = tmp_path / f"p{n}"
    assert_same_tensors(outs[1] / "sw", outs[2] / "sw", "adapter.safetensors")
    # 2 processes x 2 forward passes each: still the update of the whole batch of 8
    run_cli([*lang, "--grad-accum", "2", "--out", str(tmp_path / "accum" / "sw")], 2)
    assert_same_tensors(outs[1] / "sw", tmp_path / "accum" / "sw", "adapter.safetensors")
    assert_same_tensors(outs[1] / "ner", outs[2] / "ner", "adapter.safetensors")
    assert_same_tensors(outs[1] / "ner", outs[2] / "ner", "model_head.safetensors")
    assert mx.AdapterModel.from_pretrained(str(d / "tiny")).load_adapter(outs[2] / "sw") == "sw"  # it loads


def adapter_state(model: mx.AdapterModel, name: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.adapters[name].state_dict().items()}


def test_grad_accum_equals_one_big_batch(setup):
    """Without dropout, 4 forward passes of 2 rows make the update of one pass of 8 (same masks, same weighting)."""
    _, tok, texts, sents = setup
    states = []
    for accum in (1, 4):
        config = TrainConfig(steps=5, batch_size=8, max_length=32, seed=2, learning_rate=1e-3, grad_accum=accum)
        model = tiny_model(tok, dropout=0.0)
        train_language_adapter(model, tok, texts, "sw", config=config)
        states.append(adapter_state(model, "sw"))
        model.add_adapter("en", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
        train_task_adapter(model, tok, "ner", sents, "ner", lang_adapter="sw", config=config)
        states.append(adapter_state(model, "ner"))
    for a, b in ((states[0], states[2]), (states[1], states[3])):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_a_cancelled_run_resumes_to_the_same_weights(tmp_path, setup):
    """With dropout on: optimiser, schedule, data position, masks and dropout streams all come back from the file."""
    _, tok, texts, _ = setup
    checkpoint = tmp_path / "sw.checkpoint"
    config = TrainConfig(steps=9, batch_size=4, max_length=32, seed=5, learning_rate=1e-3, checkpoint_every=3)
    config.checkpoint, config.resume = str(checkpoint), True
    whole = tiny_model(tok)
    plain = TrainConfig(steps=9, batch_size=4, max_length=32, seed=5, learning_rate=1e-3)
    expected = train_language_adapter(whole, tok, texts, "sw", config=plain)

    calls = iter(range(100))
    with pytest.raises(Cancelled):  # stops before step 8: the checkpoint of step 6 is on disk
        train_language_adapter(tiny_model(tok), tok, texts, "sw", config=config, should_stop=lambda: next(calls) >= 7)
    assert checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["step"] == 6
    resumed_model = tiny_model(tok)
    resumed = train_language_adapter(resumed_model, tok, texts, "sw", config=config, out_dir=tmp_path / "sw")
    assert resumed.resumed_from == 6 and resumed.steps == 9
    assert resumed.losses == expected.losses
    for k, v in adapter_state(whole, "sw").items():
        assert torch.equal(v, adapter_state(resumed_model, "sw")[k]), k
    assert not checkpoint.exists()  # the finished run removes its checkpoint
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        train_language_adapter(tiny_model(tok), tok, texts, "sw", config=config, should_stop=lambda: next(calls) >= 4)
    other = TrainConfig(**{**config.__dict__, "batch_size": 8})
    with pytest.raises(ValueError, match="another run .*batch_size 4 -> 8"):  # refused, never mixed into this run
        train_language_adapter(tiny_model(tok), tok, texts, "sw", config=other)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_killed_cli_run_resumes_from_its_checkpoint(tmp_path, setup, processes):
    """SIGKILL a CLI run (every process) after its first checkpoint; `--resume` ends with the weights of an
    uninterrupted run. The tiny backbone keeps dropout here, so every process's random state must come back too."""
    import psutil

    d, *_ = setup
    dropout = save_tiny_backbone(tmp_path / "tiny-dropout", setup[1], dropout=0.1)
    args = ["train-lang", "--backbone", str(dropout), "--lang", "sw", "--text", str(d / "sw.txt")]
    args += ["--steps", "300", "--batch-size", "4", "--max-length", "32", "--seed", "1", "--lr", "1e-3"]
    args += ["--precision", "fp32"]
    run_cli([*args, "--out", str(tmp_path / "whole")], processes)
    out, checkpoint = tmp_path / "resumed", tmp_path / "resumed.checkpoint"
    resumable = [*args, "--out", str(out), "--checkpoint-every", "10"]
    proc = subprocess.Popen(
        command(resumable, processes), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for child in psutil.Process(proc.pid).children(recursive=True):  # torchrun's workers outlive a killed launcher
        child.kill()
    proc.kill()
    proc.wait()
    assert checkpoint.is_file() and not out.exists(), "the run ended before it could be killed"
    report = json.loads(run_cli([*resumable, "--resume"], processes).stdout)
    assert report["resumed_from"] >= 10 and report["steps"] == 300 and report["processes"] == processes
    assert not checkpoint.exists()
    assert_same_tensors(tmp_path / "whole", out, "adapter.safetensors")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--grad-accum", "8", "--batch-size", "4"], "error: --grad-accum 8 is larger than --batch-size 4"),
        (["--grad-accum", "0"], "error: --grad-accum must be between 1 and 4,096, not 0"),
        (["--checkpoint-every", "0"], "error: --checkpoint-every must be between 1 and 10,000,000, not 0"),
    ],
    ids=["grad-accum above batch", "grad-accum 0", "checkpoint-every 0"],
)
def test_bad_scale_out_options_are_one_line_errors(tmp_path, setup, extra, message):
    d, *_ = setup
    args = ["train-lang", "--lang", "sw", "--text", str(d / "sw.txt"), "--out", str(tmp_path / "o"), *extra]
    run = madx(args, ok=False)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [message], run.stderr
    assert not (tmp_path / "o").exists()


def test_transfer_under_several_processes_is_refused(tmp_path):
    config = tmp_path / "t.json"
    config.write_text("{}")
    # WORLD_SIZE as under accelerate launch: validation refuses before any process group
    run = madx(["transfer", "--config", str(config), "--out", str(tmp_path / "t")], ok=False, env={"WORLD_SIZE": "2"})
    assert run.returncode == 2 and run.stderr.strip().startswith("error: transfer runs in one process")
    assert not (tmp_path / "t").exists()


def test_the_paper_config_estimate_follows_from_the_measurement():
    """The estimate in configs/paper_xlmr_base.json is what bench.paper_cost computes from bench/results/gpu.json."""
    from bench.paper_cost import CONFIG, MEASURED, estimate

    config = json.loads(CONFIG.read_text())
    figures = estimate(config, json.loads(MEASURED.read_text()))
    assert {k: v for k, v in config["estimate"].items() if k != "note"} == figures
    assert "ESTIMATE" in config["estimate"]["note"]
    spec = config["lang_adapter"]
    assert (spec["batch_size"], spec["lr"], spec["reduction_factor"], spec["inv"]) == (64, 1e-4, 2, "nice")
    assert config["steps_by_size"] == {"large": 250_000, "medium": 100_000, "small": 50_000}
    assert figures["tokens_per_s"] == {"fp32": 72296, "bf16": 166853}
    # 250k steps x 64 x 128 tokens at 72,296 tokens/s: 7.87 hours
    assert figures["hours_per_language"]["large"]["fp32"] == round(250_000 * 64 * 128 / 72296 / 3600, 2) == 7.87


def test_streamed_text_is_read_a_buffer_at_a_time_and_covers_every_line(tmp_path, setup):
    _, _, texts, _ = setup
    lines = [f"{i} " + " ".join(texts[i % len(texts)].split()[:5]) for i in range(300)]  # numbered: told apart
    tok = make_word_tokenizer(w for line in lines for w in line.split())
    (tmp_path / "a.txt").write_text("\ufeff" + "\n".join(lines[:170]) + "\n\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n".join(lines[170:]), encoding="utf-8")  # no final newline
    numbers = {tok.convert_tokens_to_ids(str(i)) for i in range(300)}
    assert len(numbers) == 300 and tok.unk_token_id not in numbers
    stream = TextStream([tmp_path / "a.txt", tmp_path / "b.txt"], buffer_lines=32, seed=1).bind(tok, 200, True)
    seen = []
    while stream.passes == 0 or not seen:
        batch = stream.next_batch(8)
        if stream.passes == 0:
            seen += [f["input_ids"][1] for f in batch]
    assert sorted(seen) == sorted(numbers)  # one pass: every line once, whatever file it is in
    assert stream.most_lines_held == 32  # never more than one buffer of lines in memory


def test_a_streamed_run_resumes_mid_buffer_to_the_same_weights(tmp_path, setup):
    _, tok, texts, _ = setup
    (tmp_path / "sw.txt").write_text("\n".join(texts), encoding="utf-8")

    def stream():
        return TextStream([tmp_path / "sw.txt"], buffer_lines=12, seed=4)

    plain = TrainConfig(steps=14, batch_size=4, max_length=32, seed=4, learning_rate=1e-3)
    whole = tiny_model(tok)
    expected = train_language_adapter(whole, tok, stream(), "sw", config=plain)
    config = TrainConfig(
        **{**plain.__dict__, "checkpoint": str(tmp_path / "ck"), "checkpoint_every": 5, "resume": True}
    )
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        train_language_adapter(
            tiny_model(tok), tok, stream(), "sw", config=config, should_stop=lambda: next(calls) > 11
        )
    position = torch.load(tmp_path / "ck", weights_only=True)["batches"]
    assert position["start"] != [0, 0] and position["taken"] >= 1  # step 10 is past the first buffer, within one
    resumed_model = tiny_model(tok)
    resumed = train_language_adapter(resumed_model, tok, stream(), "sw", config=config)
    assert resumed.resumed_from == 10 and resumed.losses == expected.losses
    for k, v in adapter_state(whole, "sw").items():
        assert torch.equal(v, adapter_state(resumed_model, "sw")[k]), k
    assert sum(expected.losses[-4:]) < sum(expected.losses[:4])  # and it learns


def test_the_readme_cpu_launch_form_starts_two_processes(tmp_path, setup):
    """`accelerate launch --cpu --num_processes 2` (accelerate 1.x alone would start one process) trains with 2,
    to the weights of the `--multi_gpu` form."""
    d, *_ = setup
    args = ["train-lang", "--lang", "sw", "--text", str(d / "sw.txt"), "--steps", "4", "--batch-size", "4"]
    args += ["--backbone", str(d / "tiny"), "--seed", "3", "--max-length", "32", "--lr", "1e-3", "--json"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    run = subprocess.run(
        [*launch, "-m", "madx_core", *args, "--out", str(tmp_path / "cpu" / "sw")],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["processes"] == 2
    run_cli([*args[:-1], "--out", str(tmp_path / "gpu_form" / "sw")], 2)
    assert_same_tensors(tmp_path / "cpu" / "sw", tmp_path / "gpu_form" / "sw", "adapter.safetensors")
    assert sorted(p.name for p in (tmp_path / "cpu").iterdir()) == ["sw"]
