"""Prediction heads: token tagging (NER), extractive QA (start/end), and masked LM.

Each head is an `nn.Sequential` laid out exactly like AdapterHub's prediction heads, so `heads.{name}.{i}.weight`
keys map one to one when loading or saving `model_head.safetensors`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import get_activation

HEAD_TYPES = ("tagging", "question_answering", "masked_lm")


@dataclass
class HeadConfig:
    """A head's shape, with AdapterHub's field names (`head_config.json`'s "config")."""

    head_type: str = "tagging"
    num_labels: int = 2
    layers: int = 1
    activation_function: str | None = "tanh"
    label2id: dict[str, int] | None = None
    dropout_prob: float | None = None
    # masked_lm only:
    vocab_size: int | None = None
    layer_norm: bool = True
    bias: bool = True
    extra: dict = field(default_factory=dict)  # other keys from a loaded file, written back unchanged

    def __post_init__(self) -> None:
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"unsupported head type {self.head_type!r}; supported: {', '.join(HEAD_TYPES)}")
        if self.head_type == "question_answering":
            self.num_labels = 2  # start and end

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.label2id is None else {i: label for label, i in self.label2id.items()}

    @property
    def labels(self) -> list[str] | None:
        """The labels in the order the head predicts them (what train_task_adapter's `labels` takes)."""
        return None if self.label2id is None else sorted(self.label2id, key=self.label2id.get)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        if self.head_type != "masked_lm":
            for k in ("vocab_size", "layer_norm", "bias"):
                d.pop(k)
        return {**self.extra, **d}

    @classmethod
    def from_dict(cls, d: dict) -> HeadConfig:
        known = {"head_type", "num_labels", "layers", "activation_function", "label2id", "dropout_prob"}
        known |= {"vocab_size", "layer_norm", "bias"}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["extra"] = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs)


class PredictionHead(nn.Sequential):
    """A stack of [dropout, linear, activation] blocks ending in a projection, like AdapterHub's heads.

    tagging / question_answering with layers=L:  (Dropout, Linear, Act) * (L-1), Dropout, Linear(num_labels)
    masked_lm with layers=2:                     Linear, Act, LayerNorm, Linear(vocab)   (decoder tied to embeddings)
    """

    def __init__(self, config: HeadConfig, hidden_size: int, layer_norm_eps: float = 1e-12, dropout: float = 0.1):
        modules: list[nn.Module] = []
        if config.head_type == "masked_lm":
            for _ in range(config.layers - 1):
                modules.append(nn.Linear(hidden_size, hidden_size))
                if config.activation_function:
                    modules.append(get_activation(config.activation_function))
                if config.layer_norm:
                    modules.append(nn.LayerNorm(hidden_size, eps=layer_norm_eps))
            modules.append(nn.Linear(hidden_size, config.vocab_size, bias=config.bias))
        else:
            p = dropout if config.dropout_prob is None else config.dropout_prob
            for _ in range(config.layers - 1):
                modules += [nn.Dropout(p), nn.Linear(hidden_size, hidden_size)]
                if config.activation_function:
                    modules.append(get_activation(config.activation_function))
            modules += [nn.Dropout(p), nn.Linear(hidden_size, config.num_labels)]
        super().__init__(*modules)
        self.config = config
        self._cast: tuple | None = None  # (key, weight) of the projection cast for autocast: _projection_weight
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def decoder(self) -> nn.Linear:
        return self[-1]

    def forward(self, hidden: torch.Tensor, inverse=None, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """Run the head; for masked LM, `inverse` (the inverse invertible adapter) runs before the vocab projection,
        and `vocab` (sorted token ids) keeps only those rows of the projection (logits over that subset alone)."""
        modules = list(self)
        for module in modules[:-1]:
            hidden = module(hidden)
        if inverse is not None:
            hidden = inverse(hidden)
        decoder = modules[-1]
        if vocab is None:
            return F.linear(hidden, self._projection_weight(decoder.weight), decoder.bias)
        return F.linear(hidden, decoder.weight[vocab], None if decoder.bias is None else decoder.bias[vocab])

    def _projection_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The vocabulary projection's weight; under autocast, while it is frozen, cast once and kept. Autocast casts
        a frozen weight again at every call, and for the 250k x 384 tied embedding that was 12% of a bf16
        language-adapter step on a CPU (torch.profiler); the copy costs 2 bytes a weight while it is kept."""
        device = weight.device.type
        if weight.requires_grad or not torch.is_autocast_enabled(device):
            return weight
        dtype = torch.get_autocast_dtype(device)
        key = (dtype, weight.data_ptr(), weight._version)  # a moved or changed weight is cast again
        cached = self._cast
        if cached is None or cached[0] != key:
            cached = (key, weight.detach().to(dtype))
            self._cast = cached
        return cached[1]


ROWS = 8  # rows of the vocabulary cross-entropy cast at a time: 8 x 250k fp32 values, 8 MB


class _VocabCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits over a large vocabulary, in fp32 whatever the logits' dtype, a few rows at a time.

    F.cross_entropy on the masked positions' 92 x 250k bf16 logits casts them all to fp32, keeps their log-softmax,
    and in backward fills a zero gradient of that size before its log-softmax backward: about a third of a bf16
    language-adapter step on short lines (bench.profile_lang_step --shapes). Here each block of rows is cast, reduced
    to its log-sum-exp, and in backward turned into softmax - one-hot and written out in the logits' dtype while it
    is still in cache; only the bf16 logits and one number per row are kept. Same loss and gradient (tests); side by
    side with F.cross_entropy, a bf16 language-adapter run on Swahili took 32.7 s against 46.1 s, fp32 76.4 against
    86.6 (bench/results/cross_entropy_ab.json).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.empty(len(logits), device=logits.device)
        for lse_block, block in zip(lse.split(ROWS), logits.split(ROWS), strict=True):
            lse_block.copy_(torch.logsumexp(block.float(), -1))
        ctx.save_for_backward(logits, targets, lse)
        return (lse - logits.gather(1, targets[:, None]).squeeze(1).float()).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        blocks = zip(out.split(ROWS), logits.split(ROWS), lse.split(ROWS), targets.split(ROWS), strict=True)
        for out_block, block, lse_block, target in blocks:
            p = block.to(torch.float32, copy=True).sub_(lse_block[:, None]).exp_()  # softmax; the logits untouched
            p[torch.arange(len(p), device=p.device), target] -= 1
            out_block.copy_(p.mul_(grad / len(targets)))
        return out, None


def vocab_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """F.cross_entropy(logits.float(), targets) for (positions, vocabulary) logits, cheaper when the vocabulary is
    large (see _VocabCrossEntropy)."""
    return _VocabCrossEntropy.apply(logits, targets)


def masked_lm_head_from_checkpoint(
    state: dict[str, torch.Tensor], model_type: str, hidden_size: int, hidden_act: str, layer_norm_eps: float
) -> PredictionHead | None:
    """Build the backbone's own MLM head from checkpoint tensors (BERT `cls.predictions.*`, XLM-R `lm_head.*`)."""
    if model_type == "bert":
        names = {
            "0": "cls.predictions.transform.dense",
            "2": "cls.predictions.transform.LayerNorm",
            "bias": "cls.predictions.bias",
        }
        act = hidden_act
    else:  # XLM-R's LM head always uses gelu
        names = {"0": "lm_head.dense", "2": "lm_head.layer_norm", "bias": "lm_head.bias"}
        act = "gelu"
    if names["bias"] not in state:
        return None
    vocab_size = state[names["bias"]].shape[0]
    config = HeadConfig(head_type="masked_lm", layers=2, activation_function=act, vocab_size=vocab_size)
    head = PredictionHead(config, hidden_size, layer_norm_eps)
    with torch.no_grad():
        for idx in ("0", "2"):
            head[int(idx)].weight.copy_(state[names[idx] + ".weight"])
            head[int(idx)].bias.copy_(state[names[idx] + ".bias"])
        head.decoder.bias.copy_(state[names["bias"]])
    return head
