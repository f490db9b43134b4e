"""Errors for the UI and the API: one line, no server path, and the app keeps serving."""

from __future__ import annotations

import re
from collections.abc import Callable


class Busy(Exception):
    """The shared machine cannot take this request now (another training job, too many long texts); retry later."""


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return hide_paths(text.splitlines()[0]) if text else type(e).__name__


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:,;()]+){2,}[\\/]?")


def hide_paths(text: str) -> str:
    """Replace every absolute path in a message by its last part: errors never show where the app lives."""
    return _PATH.sub(lambda m: m.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1], text)


def friendly(fn: Callable) -> Callable:
    """Turn any failure of a callback into a one-line gr.Error, so the user reads why and the app keeps serving."""
    import functools
    import html
    import inspect
    import logging

    import gradio as gr

    def as_error(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if not isinstance(e, ValueError | FileNotFoundError | KeyError | Busy):
            logging.getLogger("madx_app").exception("callback %s failed", fn.__name__)
        return gr.Error(html.escape(one_line(e), quote=False), print_exception=False)  # shown as HTML

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise as_error(e) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise as_error(e) from None

    return wrapper
