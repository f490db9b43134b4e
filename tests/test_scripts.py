"""The analysis scripts behind the README's tables reproduce the shipped figures from the shipped adapters."""

import json
from pathlib import Path

import pytest
from helpers import madx

ASSETS = Path(__file__).resolve().parents[1] / "assets"
pytestmark = pytest.mark.integration


def run_folder(tmp: Path, links: dict[str, str]) -> Path:
    """A transfer run's adapters/ layout, its folders linked to the shipped adapters."""
    for where, shipped in links.items():
        (tmp / "adapters" / where).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "adapters" / where).symlink_to(ASSETS / "adapters" / shipped, target_is_directory=True)
    return tmp


def shipped_row(system: str, target: str) -> dict:
    rows = json.loads((ASSETS / "results.json").read_text())["rows"]
    key = (system, "en", target, "ner", "f1", 1)
    (row,) = [r for r in rows if (r["system"], r["source"], r["target"], r["task"], r["metric"], r["seed"]) == key]
    return row


def test_rescore_gives_the_shipped_rows_of_the_seed_1_adapters(tmp_path, data_dir):
    """rescore stacks each system as the run did (-LAD: the task adapter alone; MAD-X: the target's adapter under
    it) and scores the shipped seed-1 NER adapters to the shipped rows (all shipped NER rows were scored on this
    kind of CPU); a second call resumes instead of scoring again."""
    run = run_folder(
        tmp_path / "run",
        {"task/ner-madx-lad-s1": "task/ner_lad", "task/ner-madx-s1": "task/ner", "lang/pcm": "lang/pcm"},
    )
    out = tmp_path / "rescore.json"
    args = ["--config", "configs/transfer.json", "--run", str(run), "--task", "ner", "--systems", "madx-lad,madx"]
    args += ["--targets", "pcm", "--seeds", "1", "--out", str(out)]
    env = {"MADX_DATA_DIR": str(data_dir)}
    madx(args, module="scripts.rescore", env=env)
    rows = {r["system"]: r for r in json.loads(out.read_text())["rows"] if r["metric"] == "f1"}
    for system in ("madx-lad", "madx"):
        want = shipped_row(system, "pcm")
        assert rows[system]["value"] == pytest.approx(want["value"], abs=0.02), system
        assert rows[system]["examples"] == want["examples"]
    before = out.read_text()
    again = madx(args, module="scripts.rescore", env=env)
    assert again.stdout == "" and out.read_text() == before


def test_adapter_drift_measures_what_the_shipped_table_says(tmp_path, data_dir):
    """adapter_drift on the shipped Swahili adapters (MAD-X's and the one anchored to English): the held-out MLM loss
    and drift of assets/adapter_drift.json; the kind missing from the run is left out, not guessed."""
    run = run_folder(tmp_path / "run", {"lang/sw": "lang/sw", "lang_anchor/en/sw": "lang_anchor/sw"})
    out = tmp_path / "drift.json"
    args = ["--run", str(run), "--langs", "sw", "--out", str(out)]
    madx(args, module="scripts.adapter_drift", env={"MADX_DATA_DIR": str(data_dir)})
    got, want = json.loads(out.read_text())["sw"], json.loads((ASSETS / "adapter_drift.json").read_text())["sw"]
    assert set(got) == {"lines", "no_adapter_mlm_loss", "madx", "anchored to en"}
    assert got["no_adapter_mlm_loss"] == pytest.approx(want["no_adapter_mlm_loss"], abs=0.01)
    for kind in ("madx", "anchored to en"):
        assert got[kind]["heldout_mlm_loss"] == pytest.approx(want[kind]["heldout_mlm_loss"], abs=0.01), kind
        assert got[kind]["drift"] == pytest.approx(want[kind]["drift"], abs=0.002), kind
    # the anchored adapter moves the states about half as far for nearly the same loss: the table's point
    assert got["anchored to en"]["drift"] < 0.6 * got["madx"]["drift"]
    bad = madx(["--run", str(run), "--langs", "xx", "--out", str(out)], module="scripts.adapter_drift", ok=False)
    assert bad.returncode != 0 and "no held-out text for ['xx']" in bad.stderr


def test_build_assets_refuses_a_run_that_lacks_shipped_adapters(tmp_path, monkeypatch):
    """A run folder that holds only part of the adapters (a system added with --only on another machine) must not
    replace the shipped ones: --skip-transfer stops with the missing folders named and assets/ untouched."""
    import sys

    from scripts import build_assets

    runs, assets = tmp_path / "runs", tmp_path / "assets"
    (runs / "transfer" / "adapters" / "task" / "qa-madx-lad-s1").mkdir(parents=True)
    (runs / "transfer" / "results.json").write_text("{}")
    (assets / "adapters" / "lang" / "sw").mkdir(parents=True)
    monkeypatch.setattr(build_assets, "RUNS", runs)
    monkeypatch.setattr(build_assets, "ASSETS", assets)
    monkeypatch.setattr(build_assets, "REPO", tmp_path)
    monkeypatch.setattr(sys, "argv", ["build_assets", "--skip-transfer"])
    with pytest.raises(SystemExit, match="lacks adapters that ship: runs/transfer/adapters/lang, "):
        build_assets.main()
    assert [p.name for p in (assets / "adapters").rglob("*")] == ["lang", "sw"]


def test_recipe_loo_chooses_without_the_left_out_language():
    """Each language's recipe is chosen on the other languages' dev gains only, and scored on its own test gain: a
    recipe that is best on a language's own dev set but not on the others' is not chosen for it."""
    from scripts.recipe_loo import leave_one_out

    def row(recipe, target, dev, test):
        return {"recipe": recipe, "target": target, "dev": {"gain": dev}, "test": {"gain": test}}

    summary = [
        row("a", "sw", 5.0, 4.0), row("a", "ha", -1.0, -2.0), row("a", "pcm", -1.0, 0.0),
        row("b", "sw", 0.0, 1.0), row("b", "ha", 1.0, 3.0), row("b", "pcm", 1.0, 2.0),
    ]  # fmt: skip
    got = leave_one_out(summary)
    assert {t: c["recipe"] for t, c in got["chosen"].items()} == {"sw": "b", "ha": "a", "pcm": "a"}
    assert got["chosen"]["sw"]["test_gain"] == 1.0
    assert got["mean_test_gain"] == pytest.approx((1.0 - 2.0 + 0.0) / 3, abs=0.005)
    assert leave_one_out(summary, ["b"])["mean_test_gain"] == 2.0
    with pytest.raises(ValueError, match="no recipe is scored"):
        leave_one_out(summary[:1])
