"""The Gradio app that teaches MAD-X: Explore, Train, Transfer scores, How it works.

`build_app()` lays out the tabs (one module each) on one shared `AppState`; `launch_kwargs()` holds what Gradio 6
takes at launch time (theme, css, upload limits). `app.py` at the repository root is the Spaces entry point.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import explore, howto, readings, scores, train
from .registry import NO_ADAPTER
from .state import AppState, create_state

# System fonts: the Soft theme's web font is not reachable offline, and its fallback drew "Ɲamed entities (ƝER)".
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial",
                "Noto Sans", "sans-serif")  # fmt: skip
THEME = gr.themes.Soft(
    primary_hue="emerald",
    secondary_hue="orange",
    font=SYSTEM_FONTS,
    font_mono=("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"),
)
CSS = """
.gradio-container {max-width: 1280px !important; margin: auto}
footer {display: none !important}
/* Highlighted text: words are never cut in the middle ("World H ealth"), long ones wrap at their edges. */
.madx-highlight, .madx-highlight * {word-break: normal !important; overflow-wrap: break-word !important}
@media (max-width: 640px) {
  .row {flex-wrap: wrap !important}
  .row > .column, .row > .block, .row > .form {flex: 1 1 100% !important; min-width: 100% !important}
  .js-plotly-plot, .plot-container, .svg-container {max-width: 100% !important; overflow: hidden !important}
  /* The four tab names fit a phone's width with tighter padding (else the bar widens the page). */
  .tab-container button {padding-left: 6px !important; padding-right: 6px !important; font-size: 0.95em}
  .tabs, .tabitem {min-width: 0 !important}
  /* A wide table scrolls inside its own box. */
  #results-table {max-width: calc(100vw - 24px) !important; overflow-x: auto !important}
  #results-table .table-container, #results-table .table-wrap {max-width: 100% !important; min-width: 0 !important}
}
"""
# Page-level rules go into <head>: Gradio scopes `css` to the app's content, which the page frame is outside of.
HEAD = """<style>
@media (max-width: 640px) {
  /* Phones: the page frame may shrink to the screen; wide content scrolls in its own box. */
  .gradio-container {min-width: 0 !important; max-width: 100vw !important}
  .gradio-container .main.fillable {min-width: 0 !important; padding-left: 10px !important;
    padding-right: 10px !important}
  .gradio-container .main.fillable > .wrap, .gradio-container main.contain {min-width: 0 !important}
}
</style>"""
REFRESH_SECONDS = 5  # how soon an adapter trained or uploaded by someone else appears in an open page


def _language_choices(state: AppState) -> list[tuple[str, str]]:
    none = ("none: no language adapter (runs the –LAD task adapter, e.g. ner_lad)", NO_ADAPTER)
    return [none] + [(e.label(), e.name) for e in state.registry.language_adapters()]


def task_label(entry) -> str:
    """A task adapter as a visitor should read it: what it does and how it was trained."""
    if entry.origin == "shipped":
        if entry.name.endswith("_lad"):
            return f"{entry.name} · {entry.task.upper()}, MAD-X –LAD: trained with no language adapter"
        return f"{entry.name} · {entry.task.upper()}, MAD-X: trained on the {entry.lang or 'en'} language adapter"
    return entry.label()


def _task_choices(state: AppState, task: str | None) -> list[tuple[str, str]]:
    return [(task_label(e), e.name) for e in state.registry.task_adapters(task)]


def _backbone_line(state: AppState) -> str:
    from madx_core.backbones import backbone_origin

    return f"**Backbone**: {backbone_origin(state.registry.model()[0])}"


def build_app(
    state: AppState | None = None, assets: str | Path | None = None, work_dir: str | Path | None = None
) -> gr.Blocks:
    """The whole app on one shared state (created from `assets` / `work_dir`, or MADX_ASSETS / MADX_APP_DIR)."""
    state = state or create_state(Path(assets) if assets else None, Path(work_dir) if work_dir else None)
    # delete_cache: Gradio's copies of uploaded files go after an hour, and all of them when the app stops.
    with gr.Blocks(title="MAD-X: adapters for cross-lingual transfer", delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            "# MAD-X: adapters for cross-lingual transfer\n"
            "One frozen multilingual transformer, small **language adapters** and **task adapters** stacked on it: "
            "train a task in English, then swap in another language's adapter to use it in that language "
            "([Pfeiffer et al., EMNLP 2020](https://aclanthology.org/2020.emnlp-main.617/)). "
            + readings.swap_verdict(state)
        )
        backbone_line = gr.Markdown(elem_id="backbone-origin")  # which weights are loaded, and from where
        with gr.Tabs():
            with gr.Tab("Explore", id="explore"):
                ex = explore.build(state)
            with gr.Tab("Train", id="train"):
                tr = train.build(state)
            with gr.Tab("Transfer scores", id="scores"):
                sc = scores.build(state)
            with gr.Tab("How it works", id="howto"):
                hw = howto.build(state)

        # Every adapter dropdown lists the registry's adapters; they refresh on load, after a job or an upload,
        # and every few seconds when someone else added one.
        dropdowns = [
            (ex["lang"], "language", None),
            (ex["source"], "language", None),
            (ex["target"], "language", None),
            (ex["ner_task"], "task", "ner"),
            (ex["qa_task"], "task", "qa"),
            (tr["task_lang"], "language", None),
            (sc["ev_lang"], "language", None),
            (sc["ev_task"], "task", None),
            (hw["lang"], "language", None),
            (hw["task"], "task", None),
        ]
        seen_version = gr.State(-1)

        def refresh(version: int):
            if version == state.registry.version:
                return [gr.skip()] * len(dropdowns) + [gr.skip()]
            updates = [
                gr.Dropdown(choices=_language_choices(state) if kind == "language" else _task_choices(state, task))
                for _, kind, task in dropdowns
            ]
            return updates + [state.registry.version]

        refresh_outputs = [d for d, _, _ in dropdowns] + [seen_version]
        demo.load(refresh, seen_version, refresh_outputs, api_visibility="private", queue=False)
        timer = gr.Timer(REFRESH_SECONDS)
        timer.tick(
            refresh, seen_version, refresh_outputs, api_visibility="private", queue=False, show_progress="hidden"
        )
        for event in tr["events"]:  # the page that trained or uploaded sees its adapter at once
            event.then(refresh, seen_version, refresh_outputs, api_visibility="private", queue=False)

        demo.load(ex["show_active"], ex["stack_inputs"], ex["diagram"], api_visibility="private")
        demo.load(sc["scores"], sc["chart_inputs"], sc["chart_outputs"], api_name="scores")
        demo.load(lambda: _backbone_line(state), None, backbone_line, api_visibility="private")
    demo.state = state  # for tests and app.py: the shared registry, results and job runner
    return demo


def launch_kwargs(state: AppState) -> dict:
    """What Gradio 6 takes at launch (theme and css moved from Blocks to launch) plus this app's file rules."""
    return {
        "theme": THEME,
        "css": CSS,
        "head": HEAD,
        "show_error": True,  # errors outside callbacks (e.g. a malformed upload) still reach the user as text
        "max_file_size": "60mb",  # above the app's own limits (50 MB zips), so that the app can say what went wrong
        # Only the app's own zips and CSVs are served; uploads (kept in work/uploads) never are.
        "allowed_paths": [str(state.registry.downloads)],
    }


__all__ = ["build_app", "launch_kwargs", "create_state"]
