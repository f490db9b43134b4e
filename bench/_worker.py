"""One side of bench.reference: times a MAD-X forward and an adapter-training step, in ours or the reference library.

Runs under either interpreter (ours: madx_core on transformers 5; theirs: adapters 1.3.0 on transformers 4.57.6):
    python bench/_worker.py --side ours|theirs --model DIR --batch B --length L --repeats R --threads T
Prints one JSON line. The adapters are created with the same seeds; both sides run the same inputs.
"""

import argparse
import json
import statistics
import time

import torch


def build(side: str, model_dir: str):
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    if side == "ours":
        import madx_core as mx

        model = mx.AdapterModel.from_pretrained(model_dir)
        model.add_adapter("lang", mx.AdapterConfig(reduction_factor=2, inv_adapter="nice"))
        model.add_adapter("ner", mx.AdapterConfig(reduction_factor=16))
        model.add_tagging_head("ner", labels)

        def forward(ids, mask):
            return model(ids, mask, adapters=mx.Stack("lang", "ner"), head="ner").logits

        def train_setup():
            model.set_trainable(adapters=["ner"], heads=["ner"])
            model.train()
            for m in model.modules():  # no dropout, so both sides compute the same thing
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0

        return model, forward, train_setup
    from adapters import AutoAdapterModel, SeqBnConfig, SeqBnInvConfig, Stack

    model = AutoAdapterModel.from_pretrained(model_dir)
    model.add_adapter("lang", config=SeqBnInvConfig(reduction_factor=2))
    model.add_adapter("ner", config=SeqBnConfig(reduction_factor=16))
    model.add_tagging_head("ner", num_labels=len(labels))
    model.active_adapters = Stack("lang", "ner")
    model.eval()

    def forward(ids, mask):
        return model(ids, attention_mask=mask, head="ner").logits

    def train_setup():
        model.train_adapter("ner")
        # train_adapter freezes the base model only, so every head stays trainable, including the "default"
        # masked-LM head AutoAdapterModel builds from the checkpoint (dense 384x384, LayerNorm, 250,037-entry
        # decoder bias: 398,645 parameters). It is not in the forward (head="ner"), gets no gradient and AdamW
        # skips it, so it adds no work; freezing it makes the trainable sets (and counts) equal to ours.
        train_setup.left_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        for name, head in model.heads.items():
            if name != "ner":
                head.requires_grad_(False)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        model.active_adapters = Stack("lang", "ner")

    return model, forward, train_setup


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--side", choices=["ours", "theirs"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, forward, train_setup = build(args.side, args.model)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (args.batch, args.length), generator=g)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 7, ids.shape, generator=g)

    def timed(fn, repeats):
        fn()
        fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts), min(ts), max(ts)

    with torch.inference_mode():
        fwd = timed(lambda: forward(ids, mask), args.repeats)
    train_setup()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        logits = forward(ids, mask)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    trn = timed(step, max(3, args.repeats // 2))
    out = {"side": args.side, "forward_s": fwd, "train_step_s": trn, "trainable": sum(p.numel() for p in params)}
    out["trainable_before_equalising"] = getattr(train_setup, "left_trainable", out["trainable"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
