"""The MAD-X building blocks: bottleneck adapters, invertible adapters, and the Stack that composes them.

Paper: Pfeiffer, Vulić, Gurevych, Ruder. "MAD-X: An Adapter-based Framework for Multi-task Cross-lingual
Transfer", EMNLP 2020. Section 2.2 (language and task adapters) and 2.3 (invertible adapters).

The computation is the one of AdapterHub's Pfeiffer ("seq_bn") configuration, so that adapters trained with
the `adapters` library load here and give the same outputs (see `adapterhub.py`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn
from transformers.activations import get_activation

# ----------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class AdapterConfig:
    """One adapter's shape: a Pfeiffer bottleneck in every layer, plus an optional invertible adapter.

    MAD-X language adapters use reduction_factor=2 with a NICE invertible adapter; task adapters use 16 and none.
    """

    reduction_factor: float = 16
    non_linearity: str = "relu"
    inv_adapter: str | None = None  # None, "nice" or "glow"
    inv_adapter_reduction_factor: float = 2
    leave_out: list[int] = field(default_factory=list)  # layer indices without this adapter (MAD-X 2.0)

    def __post_init__(self) -> None:
        if self.reduction_factor <= 0 or self.inv_adapter_reduction_factor <= 0:
            raise ValueError("reduction factors must be positive")
        if self.inv_adapter not in (None, "nice", "glow"):
            raise ValueError(f"inv_adapter must be None, 'nice' or 'glow', not {self.inv_adapter!r}")
        self.non_linearity = self.non_linearity.lower()
        self.leave_out = sorted(int(i) for i in self.leave_out)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AdapterConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------------------------------------
# Bottleneck adapter (one per transformer layer, after the feed-forward block)


def _init_bert(module: nn.Module) -> None:
    # AdapterHub's init_weights="bert": normal(0, 0.02) weights, zero biases.
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


class BottleneckAdapter(nn.Module):
    """down-projection -> non-linearity -> up-projection. The residual is added by the caller (`adapter_block`)."""

    def __init__(self, hidden_size: int, config: AdapterConfig):
        super().__init__()
        bottleneck = int(hidden_size // config.reduction_factor)
        # Module names match AdapterHub's (`adapter_down.0`, `adapter_up`) so weights map one to one.
        self.adapter_down = nn.Sequential(nn.Linear(hidden_size, bottleneck), get_activation(config.non_linearity))
        self.adapter_up = nn.Linear(bottleneck, hidden_size)
        _init_bert(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.adapter_up(self.adapter_down(z))


def adapter_block(
    h0: torch.Tensor,
    x: torch.Tensor,
    layer_norm: nn.LayerNorm,
    adapters: list[BottleneckAdapter],
) -> torch.Tensor:
    """Replace the output sub-layer's `LN(h0 + x)` with the stacked adapters (Pfeiffer config, AdapterHub's order).

    h0 is the feed-forward output (after dense and dropout), x the sub-layer's input, layer_norm the layer's own LN.
    Each adapter in the stack sees the normalised running output and adds its own residual:
        o_k = adapter_k(LN(o_{k-1} + x)) + o_{k-1},   o_0 = h0,   out = LN(o_n + x).
    With no adapters this is exactly the backbone's `LN(h0 + x)`.
    """
    o = h0
    for adapter in adapters:
        o = adapter(layer_norm(o + x)) + o
    return layer_norm(o + x)


# ----------------------------------------------------------------------------------------------------------
# Invertible adapters (applied to the embedding output, inverted before the MLM vocabulary projection)


def _coupling_mlp(d_in: int, d_out: int, reduction_factor: float, non_linearity: str) -> nn.Sequential:
    hidden = int(d_in // reduction_factor)
    return nn.Sequential(nn.Linear(d_in, hidden), get_activation(non_linearity), nn.Linear(hidden, d_out))


class NICECoupling(nn.Module):
    """Additive coupling (Dinh et al., 2015): y1 = x1 + F(x2), y2 = x2 + G(y1). Exactly invertible."""

    def __init__(self, hidden_size: int, reduction_factor: float = 2, non_linearity: str = "relu"):
        super().__init__()
        self.split = hidden_size // 2
        d1, d2 = self.split, hidden_size - self.split
        self.F = _coupling_mlp(d2, d1, reduction_factor, non_linearity)
        self.G = _coupling_mlp(d1, d2, reduction_factor, non_linearity)
        _init_bert(self)

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        x1, x2 = x[..., : self.split], x[..., self.split :]
        if not rev:
            y1 = x1 + self.F(x2)
            y2 = x2 + self.G(y1)
        else:  # undo the two steps in reverse order
            y2 = x2 - self.G(x1)
            y1 = x1 - self.F(y2)
        return torch.cat([y1, y2], dim=-1)


class GLOWCoupling(nn.Module):
    """Affine coupling (Kingma & Dhariwal, 2018): y1 = e(s2(x2)) * x1 + t2(x2), y2 = e(s1(y1)) * x2 + t1(y1).

    The scale e(s) = exp(clamp * 0.636 * atan(s / clamp)) is a soft clamp that keeps it invertible and finite.
    Parameter names follow AdapterHub (`s1`, `s2`); unlike its 1.3.0 code, we split along the hidden dimension.
    """

    def __init__(self, hidden_size: int, reduction_factor: float = 2, non_linearity: str = "relu", clamp: float = 5.0):
        super().__init__()
        self.split = hidden_size // 2
        d1, d2 = self.split, hidden_size - self.split
        self.clamp = clamp
        self.s1 = _coupling_mlp(d1, 2 * d2, reduction_factor, non_linearity)  # conditions x2's transform on y1
        self.s2 = _coupling_mlp(d2, 2 * d1, reduction_factor, non_linearity)  # conditions x1's transform on x2
        _init_bert(self)

    def _scale(self, s: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.clamp * (2 / math.pi) * torch.atan(s / self.clamp))

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        x1, x2 = x[..., : self.split], x[..., self.split :]
        d1 = self.split
        if not rev:
            s2, t2 = self.s2(x2).split([d1, d1], dim=-1)
            y1 = self._scale(s2) * x1 + t2
            s1, t1 = self.s1(y1).split([x2.shape[-1]] * 2, dim=-1)
            y2 = self._scale(s1) * x2 + t1
        else:
            s1, t1 = self.s1(x1).split([x2.shape[-1]] * 2, dim=-1)
            y2 = (x2 - t1) / self._scale(s1)
            s2, t2 = self.s2(y2).split([d1, d1], dim=-1)
            y1 = (x1 - t2) / self._scale(s2)
        return torch.cat([y1, y2], dim=-1)


INVERTIBLE_ADAPTERS = {"nice": NICECoupling, "glow": GLOWCoupling}


# ----------------------------------------------------------------------------------------------------------
# One named adapter (language or task) across the whole model


class Adapter(nn.Module):
    """All weights of one named adapter: a bottleneck per layer (minus leave_out) and an optional invertible adapter."""

    def __init__(self, name: str, config: AdapterConfig, hidden_size: int, num_layers: int):
        super().__init__()
        self.name, self.config, self.hidden_size = name, config, hidden_size
        bad = [i for i in config.leave_out if not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"adapter {name!r}: leave_out {bad} outside the model's {num_layers} layers")
        # Keys are layer indices as strings (nn.ModuleDict needs str keys).
        self.layers = nn.ModuleDict(
            {str(i): BottleneckAdapter(hidden_size, config) for i in range(num_layers) if i not in config.leave_out}
        )
        self.invertible = None
        if config.inv_adapter:
            cls = INVERTIBLE_ADAPTERS[config.inv_adapter]
            self.invertible = cls(hidden_size, config.inv_adapter_reduction_factor, config.non_linearity)

    def at_layer(self, i: int) -> BottleneckAdapter | None:
        return self.layers[str(i)] if str(i) in self.layers else None


# ----------------------------------------------------------------------------------------------------------
# Composition


class Stack:
    """An ordered composition of adapters, e.g. Stack("sw", "ner"): the language adapter, then the task adapter."""

    def __init__(self, *names: str):
        if not names:
            raise ValueError("a Stack needs at least one adapter name")
        for n in names:
            if not isinstance(n, str) or not n:
                raise ValueError(f"adapter names in a Stack must be non-empty strings, got {n!r}")
        self.names: tuple[str, ...] = tuple(names)

    @classmethod
    def of(cls, adapters: Stack | str | list[str] | tuple[str, ...] | None) -> Stack | None:
        """Normalise what callers pass as `adapters=`: a Stack, one name, a list of names, or None."""
        if adapters is None or isinstance(adapters, Stack):
            return adapters
        if isinstance(adapters, str):
            return cls(adapters)
        names = list(adapters)
        return cls(*names) if names else None

    def first(self) -> str:
        return self.names[0]

    def last(self) -> str:
        return self.names[-1]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stack) and other.names == self.names

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return "Stack(" + ", ".join(repr(n) for n in self.names) + ")"
