"""Checking what visitors send: text, names, language codes, and who sent it (for quotas and per-session results)."""

from __future__ import annotations

import os
import re
import unicodedata

from .limits import MAX_TEXT_CHARS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
NAME_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a catalog name is echoed in errors; a path never is
LANG_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})?$")  # a language code such as sw, pcm, zh-Hans


def clean_text(text: str | None, what: str = "text", limit: int = MAX_TEXT_CHARS) -> str:
    """Replace control characters and lone surrogates by spaces (same length, so offsets stay valid); check size."""
    text = text or ""
    if not text.strip():
        raise ValueError(f"the {what} is empty: type or paste some {what}, or click an example")
    if len(text) > limit:
        raise ValueError(f"the {what} has {len(text):,} characters; the limit here is {limit:,}")
    return "".join(
        " " if unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" else c for c in text
    )  # category Cc: C0/C1 controls, Cs: surrogates the tokenizer cannot encode


def shown(value: object, limit: int = 60) -> str:
    """A visitor's input as quoted in an error message: repr'd and cut, so a 100,000-character input stays short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_name(name: str | None, what: str = "adapter name") -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise ValueError(
            f"{what} {shown(name)} is not allowed: use 1-40 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_language(code: str | None) -> str:
    """A language code typed by a visitor (empty: 'unknown'); it ends up in result rows, so it is kept short."""
    code = (code or "").strip()
    if not code:
        return "unknown"
    if len(code) > 16 or not LANG_RE.match(code):
        raise ValueError("the data language must be a language code such as sw, pcm or zh-Hans")
    return code


def visitor_address(request) -> str:
    """Who a request comes from, for quotas: the client address.

    On a Space (SPACE_ID is set) the app sits behind Hugging Face's proxy, which appends the real client to
    X-Forwarded-For, so the last hop is used; elsewhere that header comes from the client itself and is ignored.
    """
    client = getattr(getattr(request, "client", None), "host", None) or "unknown"
    headers = getattr(request, "headers", None)
    if not os.environ.get("SPACE_ID") or headers is None or not hasattr(headers, "get"):
        return client
    hops = [h.strip() for h in (headers.get("x-forwarded-for") or "").split(",") if h.strip()]
    return hops[-1] if hops else client


def visitor_session(request) -> str | None:
    """The browser session (or gradio_client instance) a request comes from; its own evaluations are kept for it."""
    return getattr(request, "session_hash", None) or None
