"""The transfer matrix end to end on a tiny local backbone and generated data: every system, two seeds, results."""

import csv
import json
from pathlib import Path

import pytest
from helpers import make_word_tokenizer, ner_sentences, save_tiny_backbone, sw_texts

from madx_core import data as D
from madx_core.transfer import merge_runs, run_transfer


def write_data(folder: Path, **files: list) -> None:
    """CoNLL files of NER sentences, or text files of lines, by file name; and a tiny BERT over all their words."""
    words = []
    for name, items in files.items():
        if isinstance(items[0], str):
            (folder / name).write_text("\n".join(items), encoding="utf-8")
            words += " ".join(items).split()
        else:
            D.write_conll(folder / name, [s.tokens for s in items], [s.labels for s in items])
            words += [w for s in items for w in s.tokens]
    save_tiny_backbone(folder / "tiny", make_word_tokenizer(words), kind="bert")


def ner_config(folder: Path, systems: list[str], targets: dict[str, str], text: str = "sw.txt", **task) -> dict:
    """A transfer config: NER from English (en.txt) on the tiny backbone, two seeds, 2-step language adapters
    (trained on en.txt and on `text`); `targets` maps target languages to file names in `folder`."""
    return {
        "backbone": str(folder / "tiny"),
        "systems": systems,
        "seeds": [1, 2],
        "texts": {"en": [str(folder / "en.txt")], "sw": [str(folder / text)]},
        "lang_adapter": {"steps": 2, "batch_size": 4},
        "tasks": {
            "ner": {
                "source": "en",
                "train": str(folder / "en.txt"),
                "targets": {lang: str(folder / name) for lang, name in targets.items()},
                "batch_size": 8,
                **task,
            }
        },
    }


def test_transfer_matrix_writes_results(tmp_path):
    write_data(
        tmp_path, **{"en.txt": ner_sentences(40), "sw.txt": ner_sentences(15, seed=1), "sw_text.txt": sw_texts(20)}
    )
    cfg = ner_config(
        tmp_path,
        ["baseline", "mlm-trg", "madx-lad", "madx-inv", "madx"],
        {"sw": "sw.txt"},
        text="sw_text.txt",
        steps=3,
    )
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    summary = run_transfer(tmp_path / "cfg.json", out)
    results = json.loads((out / "results.json").read_text())
    # 5 systems + madx-src (madx's task adapter with the source adapter kept) x 2 seeds x 1 target x f1
    assert summary["rows"] == len(results["rows"]) == 6 * 2
    assert {r["system"] for r in results["rows"]} == {*cfg["systems"], "madx-src"}
    by = {(r["system"], r["seed"]): r for r in results["rows"]}
    assert by[("madx-src", 1)]["train_seconds"] == by[("madx", 1)]["train_seconds"]  # same adapter, no training
    assert all(0 <= r["value"] <= 1 and r["target"] == "sw" and r["examples"] == 15 for r in results["rows"])
    means = {(s["system"], s["metric"]): s for s in results["summary"]}
    seeds = [by[("madx", seed)]["value"] for seed in (1, 2)]
    assert means[("madx", "f1")]["n"] == 2
    # the spread over seeds is the sample standard deviation (n - 1), the one definition the app shows too
    assert means[("madx", "f1")]["std"] == pytest.approx(abs(seeds[0] - seeds[1]) / 2**0.5, abs=1e-4)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["system", "source", "target", "task", "metric", "value", "seed"] and len(rows) == 12
    # the language adapters and task adapters are AdapterHub directories, stored in fp16
    lang = json.loads((out / "adapters" / "lang" / "sw" / "adapter_config.json").read_text())
    assert lang["config"]["inv_adapter"] == "nice"
    assert (out / "adapters" / "lang_noinv" / "en" / "adapter.safetensors").is_file()
    assert (out / "adapters" / "task" / "ner-madx-s1" / "head_config.json").is_file()

    # A run that was cut off resumes: finished (task, system, seed) groups are kept, the missing one is redone.
    kept = [r for r in results["rows"] if not (r["system"] in ("madx", "madx-src") and r["seed"] == 2)]
    results["rows"] = kept
    (out / "results.json").write_text(json.dumps(results))
    summary = run_transfer(tmp_path / "cfg.json", out)
    again = json.loads((out / "results.json").read_text())["rows"]
    assert summary["rows"] == 12 and again[:10] == kept
    assert {(r["system"], r["seed"]) for r in again[10:]} == {("madx", 2), ("madx-src", 2)}


def test_transfer_sources_matrix_and_growing_a_run(tmp_path):
    """Extra source languages fill a source x target matrix; a costly system can run fewer seeds; asking for more
    seeds later adds only their rows and keeps every finished one."""
    write_data(tmp_path, **{"en.txt": ner_sentences(30), "sw.txt": ner_sentences(30, seed=1)})
    extra = {"system_seeds": {"baseline": [1]}, "source_systems": ["madx"], "source_seeds": [1]}
    cfg = ner_config(
        tmp_path,
        ["madx", "baseline"],
        {"en": "en.txt", "sw": "sw.txt"},
        steps=2,
        sources={"sw": str(tmp_path / "sw.txt")},
        **extra,
    )
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    run_transfer(tmp_path / "cfg.json", out)
    rows = json.loads((out / "results.json").read_text())["rows"]
    cells = {(r["system"], r["source"], r["target"], r["seed"]) for r in rows}
    # sw as a source: its own task adapter on the sw adapter, swapped to en (madx) or kept (madx-src)
    assert {("madx", "sw", "en", 1), ("madx-src", "sw", "en", 1), ("madx", "sw", "sw", 1)} <= cells
    assert {r["seed"] for r in rows if r["system"] == "baseline"} == {1}  # system_seeds
    assert {r["seed"] for r in rows if r["system"] == "madx" and r["source"] == "en"} == {1, 2}
    assert all(r["device"] == "cpu" for r in rows)

    cfg["seeds"] = [1, 2, 3]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_transfer(tmp_path / "cfg.json", out)
    again = json.loads((out / "results.json").read_text())["rows"]
    assert again[: len(rows)] == rows
    assert {(r["system"], r["seed"]) for r in again[len(rows) :]} == {("madx", 3), ("madx-src", 3)}


def test_transfer_only_computes_the_named_systems_and_keeps_the_whole_config(tmp_path):
    """`transfer --only baseline` runs the costly baseline alone (e.g. on another machine); the adapter systems are
    left for a later run, which adds them without redoing the baseline."""
    write_data(tmp_path, **{"en.txt": ner_sentences(30), "sw.txt": ner_sentences(20, seed=1)})
    cfg = ner_config(tmp_path, ["madx", "baseline"], {"sw": "sw.txt"}, steps=2)
    cfg["seeds"] = [1]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    run_transfer(tmp_path / "cfg.json", out, only=["baseline"])
    first = json.loads((out / "results.json").read_text())
    assert {r["system"] for r in first["rows"]} == {"baseline"}
    assert first["meta"]["config"]["systems"] == ["madx", "baseline"]
    assert not (out / "adapters").exists()  # no language adapter was trained for a system not asked for
    run_transfer(tmp_path / "cfg.json", out)
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows[: len(first["rows"])] == first["rows"]
    assert {r["system"] for r in rows} == {"baseline", "madx", "madx-src"}
    with pytest.raises(ValueError, match="unknown systems"):
        run_transfer(tmp_path / "cfg.json", out, only=["madx-x"])


def test_runs_of_one_target_each_merge_into_the_whole_run(tmp_path):
    """MLM-TRG run as one process per target (`--targets`, e.g. side by side on one GPU), merged into the whole run:
    the merged run has every target's row once and computes nothing more; a row scored on another test file is not
    taken; and a config that later asks for a new target scores it without duplicating the others."""
    write_data(
        tmp_path,
        **{"en.txt": ner_sentences(30), "sw.txt": ner_sentences(20, seed=1), "ha.txt": ner_sentences(20, seed=2)},
    )
    cfg = ner_config(tmp_path, ["mlm-trg"], {"en": "en.txt", "sw": "sw.txt", "ha": "ha.txt"}, steps=2, full_steps=2)
    cfg["seeds"] = [1]
    cfg["texts"]["ha"] = [str(tmp_path / "ha.txt")]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    for tgt in ("sw", "ha"):
        run_transfer(tmp_path / "cfg.json", tmp_path / f"out-{tgt}", only=["mlm-trg"], targets=[tgt])
        part = json.loads((tmp_path / f"out-{tgt}" / "results.json").read_text())
        assert [r["target"] for r in part["rows"]] == [tgt] and part["meta"]["config"] == cfg
    with pytest.raises(ValueError, match="unknown targets"):
        run_transfer(tmp_path / "cfg.json", tmp_path / "out-x", targets=["xx"])
    out = tmp_path / "out"
    merge_runs(tmp_path / "cfg.json", out, [tmp_path / "out-sw", tmp_path / "out-ha"])
    merged = json.loads((out / "results.json").read_text())
    assert sorted((r["system"], r["target"]) for r in merged["rows"]) == [("mlm-trg", "ha"), ("mlm-trg", "sw")]
    assert merged["meta"]["config"] == cfg
    run_transfer(tmp_path / "cfg.json", out)
    assert json.loads((out / "results.json").read_text())["rows"] == merged["rows"]  # nothing left to compute

    other = json.loads(json.dumps(cfg))
    other["tasks"]["ner"]["targets"]["ha"] = str(tmp_path / "sw.txt")  # ha's rows scored on another file
    (tmp_path / "other.json").write_text(json.dumps(other))
    merge_runs(tmp_path / "other.json", tmp_path / "out-other", [tmp_path / "out-ha", tmp_path / "out-sw"])
    kept = json.loads((tmp_path / "out-other" / "results.json").read_text())["rows"]
    assert [r["target"] for r in kept] == ["sw"]
    with pytest.raises(FileNotFoundError, match="no results.json"):
        merge_runs(tmp_path / "cfg.json", out, [tmp_path / "missing"])

    madx = ner_config(tmp_path, ["madx"], {"en": "en.txt", "sw": "sw.txt"}, steps=2)
    madx["seeds"] = [1]
    (tmp_path / "madx.json").write_text(json.dumps(madx))
    run_transfer(tmp_path / "madx.json", tmp_path / "out-madx")
    madx["tasks"]["ner"]["targets"]["ha"] = str(tmp_path / "ha.txt")
    madx["texts"]["ha"] = [str(tmp_path / "ha.txt")]
    (tmp_path / "madx.json").write_text(json.dumps(madx))
    run_transfer(tmp_path / "madx.json", tmp_path / "out-madx")
    rows = json.loads((tmp_path / "out-madx" / "results.json").read_text())["rows"]
    cells = [(r["system"], r["target"]) for r in rows]
    assert sorted(cells) == sorted((s, t) for s in ("madx", "madx-src") for t in ("en", "sw", "ha"))


def test_a_changed_language_adapter_recipe_trains_the_adapters_again(tmp_path):
    """A run keeps what its language adapters were trained from beside them: the same config reuses them, a changed
    recipe trains them again (their rows are recomputed too), so no row is scored with a stale adapter."""
    write_data(tmp_path, **{"en.txt": ner_sentences(30), "sw.txt": ner_sentences(20, seed=1)})
    cfg = ner_config(tmp_path, ["madx"], {"sw": "sw.txt"}, steps=2)
    cfg["seeds"] = [1]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    run_transfer(tmp_path / "cfg.json", out)
    sw = out / "adapters" / "lang" / "sw"
    first = (sw / "adapter.safetensors").read_bytes()
    assert json.loads((sw / "madx_training.json").read_text())["lang_adapter"] == cfg["lang_adapter"]
    run_transfer(tmp_path / "cfg.json", out)
    assert (sw / "adapter.safetensors").read_bytes() == first  # unchanged config: reused
    cfg["lang_adapter"]["steps"] = 4
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_transfer(tmp_path / "cfg.json", out)
    assert (sw / "adapter.safetensors").read_bytes() != first
    assert json.loads((sw / "madx_training.json").read_text())["lang_adapter"]["steps"] == 4
    rows = json.loads((out / "results.json").read_text())
    assert rows["meta"]["config"]["lang_adapter"]["steps"] == 4 and {r["system"] for r in rows["rows"]} == {
        "madx",
        "madx-src",
    }


def test_a_longer_task_adapter_budget_keeps_the_full_fine_tuning_rows(tmp_path):
    """Each row depends on its own system's recipe: more epochs for the task adapters retrains them and keeps full
    fine-tuning's rows (its own budget did not change) and an extra source's (it has its own "source_steps"); a new
    full fine-tuning rate redoes the baseline only."""
    write_data(tmp_path, **{"en.txt": ner_sentences(30), "sw.txt": ner_sentences(20, seed=1)})
    extra = {"sources": {"sw": str(tmp_path / "sw.txt")}, "source_systems": ["madx"], "source_seeds": [1]}
    cfg = ner_config(tmp_path, ["madx", "baseline"], {"sw": "sw.txt"}, steps=2, full_steps=2, source_steps=3, **extra)
    cfg["seeds"] = [1]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    run_transfer(tmp_path / "cfg.json", out)

    def rows() -> list[dict]:
        return json.loads((out / "results.json").read_text())["rows"]

    def of(rs: list[dict], *systems: str) -> list[dict]:
        return [r for r in rs if r["system"] in systems]

    first = rows()
    task_adapter = out / "adapters" / "task" / "ner-madx-s1" / "adapter.safetensors"
    trained = task_adapter.read_bytes()
    cfg["tasks"]["ner"]["epochs"] = 2  # 8 steps of 8 sentences instead of 2
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_transfer(tmp_path / "cfg.json", out)
    second = rows()
    kept = [r for r in first if r["system"] == "baseline" or r["source"] == "sw"]
    assert second[: len(kept)] == kept  # kept, in front
    assert task_adapter.read_bytes() != trained and of(second[len(kept) :], "madx", "madx-src")  # trained again
    assert json.loads((out / "results.json").read_text())["meta"]["config"]["tasks"]["ner"]["epochs"] == 2
    cfg["tasks"]["ner"]["full_lr"] = 1e-4
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_transfer(tmp_path / "cfg.json", out)
    third = rows()
    adapters = of(second, "madx", "madx-src")
    assert third[: len(adapters)] == adapters and {r["system"] for r in third[len(adapters) :]} == {"baseline"}


def test_anchored_target_adapters_are_added_to_a_finished_run_with_madx_task_adapters(tmp_path):
    """madx-anchor (a variant beyond the paper) scores madx's own task adapter with anchored target adapters: asked for
    after madx finished, it trains only those adapters and adds its rows (on the source, it is the source's adapter,
    so it equals madx there); a new anchor weight trains them again and redoes its rows only."""
    write_data(tmp_path, **{"en.txt": ner_sentences(30), "sw.txt": ner_sentences(20, seed=1)})
    cfg = ner_config(tmp_path, ["madx"], {"en": "en.txt", "sw": "sw.txt"}, steps=2)
    cfg["seeds"] = [1]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    run_transfer(tmp_path / "cfg.json", out)
    first = json.loads((out / "results.json").read_text())["rows"]
    task_adapter = (out / "adapters" / "task" / "ner-madx-s1" / "adapter.safetensors").read_bytes()

    cfg["systems"], cfg["madx_anchor"] = ["madx", "madx-anchor"], {"weight": 5.0}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_transfer(tmp_path / "cfg.json", out)
    second = json.loads((out / "results.json").read_text())["rows"]
    assert second[: len(first)] == first  # madx and madx-src kept, their task adapter not trained again
    assert (out / "adapters" / "task" / "ner-madx-s1" / "adapter.safetensors").read_bytes() == task_adapter
    added = {r["target"]: r for r in second[len(first) :]}
    assert sorted(added) == ["en", "sw"] and {r["system"] for r in added.values()} == {"madx-anchor"}
    madx = {r["target"]: r for r in first if r["system"] == "madx"}
    assert added["en"]["value"] == madx["en"]["value"]
    anchored = out / "adapters" / "lang_anchor" / "en" / "sw"
    record = json.loads((anchored / "madx_training.json").read_text())
    assert record["madx_anchor"] == {"weight": 5.0} and record["start_from"] == "en"
    weights = (anchored / "adapter.safetensors").read_bytes()
    assert weights != (out / "adapters" / "lang" / "sw" / "adapter.safetensors").read_bytes()

    cfg["madx_anchor"] = {"weight": 50.0}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_transfer(tmp_path / "cfg.json", out)
    third = json.loads((out / "results.json").read_text())["rows"]
    assert third[: len(first)] == first and {r["system"] for r in third[len(first) :]} == {"madx-anchor"}
    assert (anchored / "adapter.safetensors").read_bytes() != weights


def test_backbone_anchored_target_adapters_are_scored_with_the_lad_task_adapters(tmp_path):
    """madx-lad-anchor (a variant beyond the paper) scores madx-lad's task adapter with target adapters pulled towards
    the backbone's own layer outputs: it trains only those adapters (MAD-X's fresh shape, no start from a source
    adapter), and on the source it is -LAD's stack, so it equals madx-lad there."""
    write_data(tmp_path, **{"en.txt": ner_sentences(30), "sw.txt": ner_sentences(20, seed=1)})
    cfg = ner_config(tmp_path, ["madx-lad", "madx-lad-anchor"], {"en": "en.txt", "sw": "sw.txt"}, steps=2)
    cfg["seeds"], cfg["madx_anchor"] = [1], {"weight": 5.0}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    run_transfer(tmp_path / "cfg.json", out)
    rows = {(r["system"], r["target"]): r["value"] for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {(s, t) for s in ("madx-lad", "madx-lad-anchor") for t in ("en", "sw")}
    assert rows["madx-lad-anchor", "en"] == rows["madx-lad", "en"]
    assert not (out / "adapters" / "lang").exists()  # MAD-X's own language adapters are not needed
    record = json.loads((out / "adapters" / "lang_anchor" / "none" / "sw" / "madx_training.json").read_text())
    assert record["anchor"] == "backbone" and "start_from" not in record


def test_lad_task_adapters_continued_over_the_target_adapters_and_their_control(tmp_path):
    """madx-lad-pool (a variant beyond the paper) trains madx-lad's task adapter further over the backbone-anchored
    target adapters and scores it with the target's swapped in; madx-lad-more, its control, trains it as much further
    with none. Both start from madx-lad's shipped adapter (left as it is); a run folder that lacks it (rows merged
    from elsewhere) trains it again first, and a changed continuation recomputes only these two systems."""
    write_data(tmp_path, **{"en.txt": ner_sentences(30), "sw.txt": ner_sentences(20, seed=1)})
    systems = ["madx-lad", "madx-lad-pool", "madx-lad-more"]
    cfg = ner_config(tmp_path, systems, {"en": "en.txt", "sw": "sw.txt"}, steps=2)
    cfg["seeds"], cfg["madx_anchor"], cfg["madx_lad_continue"] = [1], {"weight": 5.0}, {"epochs": 1, "lr": 1e-3}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    run_transfer(tmp_path / "cfg.json", out, only=["madx-lad"])
    start = out / "adapters" / "task" / "ner-madx-lad-s1" / "adapter.safetensors"
    weights = start.read_bytes()
    run_transfer(tmp_path / "cfg.json", out)
    first = json.loads((out / "results.json").read_text())["rows"]
    rows = {(r["system"], r["target"]): r["value"] for r in first}
    assert set(rows) == {(s, t) for s in systems for t in ("en", "sw")}
    assert start.read_bytes() == weights
    continued = {s: (out / "adapters" / "task" / f"ner-{s}-s1" / "adapter.safetensors").read_bytes() for s in systems}
    assert len(set(continued.values())) == 3  # each trained on its own
    assert (out / "adapters" / "lang_anchor" / "none" / "sw").is_dir()  # what madx-lad-pool trains over

    # rows of madx-lad from elsewhere, without its adapter: the continued systems train it again first
    start.parent.rename(tmp_path / "elsewhere")
    cfg["madx_lad_continue"] = {"epochs": 2, "lr": 1e-3}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    run_transfer(tmp_path / "cfg.json", out)
    second = json.loads((out / "results.json").read_text())["rows"]
    assert [r for r in second if r["system"] == "madx-lad"] == [r for r in first if r["system"] == "madx-lad"]
    assert {r["system"] for r in second if r not in first} == {"madx-lad-pool", "madx-lad-more"}
    assert start.is_file()


def test_the_continued_variant_is_measured_against_its_control_too():
    """An extra epoch of the task adapter must not pass for the target adapters' gain: madx-lad-pool helps only if it
    beats -LAD and its control (the same extra training with no adapter), and the verdict names what beat it."""
    from madx_core.results import swap_helps, swap_verdict

    systems = {"madx-lad": {"mean": 0.480}, "madx-lad-pool": {"mean": 0.483}, "madx-lad-more": {"mean": 0.485}}
    assert swap_helps(systems, "madx-lad-pool") == (False, "madx-lad-more", pytest.approx(0.002))
    assert "does not help here: MAD-X –LAD continued with no language adapter" in swap_verdict(
        systems, "madx-lad-pool", 100
    )
    systems["madx-lad-more"]["mean"] = 0.481
    assert swap_helps(systems, "madx-lad-pool")[:2] == (True, "madx-lad-more")
    # without its control there is no verdict
    del systems["madx-lad-more"]
    assert not swap_helps(systems, "madx-lad-pool")[0]
    assert "is not measured against MAD-X –LAD continued" in swap_verdict(systems, "madx-lad-pool", 100)
    # the anchored variant is still measured against -LAD and the source adapter only
    assert swap_helps({"madx-lad": {"mean": 0.4}, "madx-lad-anchor": {"mean": 0.41}}, "madx-lad-anchor")[0]
