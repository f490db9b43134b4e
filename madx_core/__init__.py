"""madx_core: MAD-X (Pfeiffer et al., EMNLP 2020) adapters on Hugging Face transformers 5."""

from .adapters import AdapterConfig, GLOWCoupling, NICECoupling, Stack
from .heads import HeadConfig, PredictionHead
from .model import AdapterModel, AdapterModelOutput

__all__ = [
    "AdapterConfig",
    "AdapterModel",
    "AdapterModelOutput",
    "GLOWCoupling",
    "HeadConfig",
    "NICECoupling",
    "PredictionHead",
    "Stack",
]
