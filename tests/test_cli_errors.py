"""The CLI's promise, case by case: bad options end in one `error: ...` line and exit code 2, and nothing is lost.

The cases call the CLI's `main()` in this process (they must fail before any model is loaded); the one that used
to loop forever eating memory (`--max-length 1` in encode_ner) runs in its own process, with a memory cap and a
timeout, so that a regression fails the test instead of the machine.
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import pytest
from helpers import madx

CONLL = "Amina B-PER\nlives O\nin O\nKano B-LOC\n. O\n\nJohn B-PER\nworks O\nat O\nWHO B-ORG\n. O\n"
MEMORY_CAP = 6 * 2**30  # far above a real run's needs; an endless loop hits it and fails instead of the machine


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return madx(list(args), ok=False, timeout=timeout, preexec_fn=_cap_memory)


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    """Inputs for the table: a CoNLL file, a text file, a kept folder and file, JSON nested 100,000 deep."""
    (tmp_path / "train.conll").write_text(CONLL, encoding="utf-8")
    (tmp_path / "text.txt").write_text("Habari ya asubuhi.\nNinapenda kusoma vitabu.\n", encoding="utf-8")
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("my work", encoding="utf-8")
    (tmp_path / "file.txt").write_text("do not move me", encoding="utf-8")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    return {
        k: str(tmp_path / v)
        for k, v in {
            "conll": "train.conll",
            "text": "text.txt",
            "kept": "kept",
            "file": "file.txt",
            "deep": "deep.json",
            "new": "new-out",
            "tmp": ".",
        }.items()
    }


# (case, arguments with {placeholders}, what the one-line error must mention)
CASES = [
    ("max-length 1", "train-task --task ner --data {conll} --out {new} --steps 1 --max-length 1", "--max-length"),
    ("max-length 600", "train-task --task ner --data {conll} --out {new} --max-length 600", "--max-length"),
    ("out is a non-empty folder", "train-lang --lang sw --text {text} --out {kept} --steps 1", "not empty"),
    ("out is a file", "train-task --task ner --data {conll} --out {file} --steps 1", "is a file"),
    ("steps -1", "train-lang --lang sw --text {text} --out {new} --steps -1", "--steps"),
    ("steps 0", "train-task --task ner --data {conll} --out {new} --steps 0", "--steps"),
    ("batch-size 0", "train-task --task ner --data {conll} --out {new} --batch-size 0", "--batch-size"),
    ("batch-size -3", "train-full --task ner --data {conll} --out {new} --batch-size -3", "--batch-size"),
    ("batch-size not a number", "train-task --task ner --data {conll} --out {new} --batch-size x", "--batch-size"),
    ("lr 0", "train-task --task ner --data {conll} --out {new} --lr 0", "--lr"),
    ("lr nan", "train-task --task ner --data {conll} --out {new} --lr nan", "--lr"),
    ("time-limit -5", "train-lang --lang sw --text {text} --out {new} --time-limit -5", "--time-limit"),
    ("epochs 0", "train-task --task ner --data {conll} --out {new} --epochs 0", "--epochs"),
    (
        "reduction-factor 0.0075",
        "train-lang --lang sw --text {text} --out {new} --reduction-factor 0.0075",
        "reduction",
    ),
    ("seed -1", "train-task --task ner --data {conll} --out {new} --seed -1", "--seed"),
    ("data is a folder", "train-task --task ner --data {tmp} --out {new}", "is a directory"),
    ("text missing", "train-lang --lang sw --text {new}.txt --out {new}", "file not found"),
    ("adapter is a file", "ner --task-adapter {file} --text hello", "is a file"),
    ("model missing", "evaluate --task ner --data {conll} --model {new}", "--model"),
    (
        "predictions is a folder",
        "evaluate --task ner --data {conll} --model {kept} --predictions {kept}",
        "--predictions",
    ),
    ("config nested 100,000 deep", "transfer --config {deep} --out {new}", "nested too deeply"),
    ("QA data nested 100,000 deep", "train-task --task qa --data {deep} --out {new} --steps 1", "nested too deeply"),
    ("transfer out is a file", "transfer --config {deep} --out {file}", "is a file"),
]


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of the CLI's main() in this process; argparse's own errors exit through SystemExit."""
    from madx_core.cli import main

    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case, command, mentions", CASES, ids=[c[0] for c in CASES])
def test_bad_option_is_one_line_exit_2_and_nothing_lost(files, case, command, mentions, capsys):
    args = [a.format(**files) for a in command.split()]
    if case == "max-length 1":
        result = run_cli(*args, timeout=240)
        code, stderr = result.returncode, result.stderr
    else:
        code, stderr = run_main(args, capsys)
    lines = stderr.strip().splitlines()
    assert code == 2, f"{case}: exit {code}; stderr ends {stderr[-800:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: stderr was {stderr[-800:]}"
    assert mentions in lines[0], lines[0]
    assert "Traceback" not in stderr
    # Nothing lost, nothing half-written: the kept folder and file are as they were, no output appeared.
    assert Path(files["kept"], "notes.txt").read_text(encoding="utf-8") == "my work"
    assert sorted(p.name for p in Path(files["kept"]).iterdir()) == ["notes.txt"]
    assert Path(files["file"]).read_text(encoding="utf-8") == "do not move me"
    assert not Path(files["new"]).exists()
    assert not [p for p in Path(files["tmp"]).iterdir() if p.name.startswith(".")], "a temporary folder was left"


def test_overwrite_replaces_a_non_empty_out_folder(files):
    args = ["train-lang", "--lang", "sw", "--text", files["text"], "--out", files["kept"], "--overwrite", "--json"]
    result = madx([*args, "--steps", "1", "--batch-size", "2", "--max-length", "16"])
    assert json.loads(result.stdout)["steps"] == 1
    assert (Path(files["kept"]) / "adapter_config.json").is_file()
    assert not (Path(files["kept"]) / "notes.txt").exists()
