"""The app in headless Chromium (Debian's package, driven by Playwright; never a browser download).

Runs NER in the UI, switches tabs, and checks that a Plotly chart renders. Set MADX_SCREENSHOT_DIR to keep
screenshots of the Explore and Transfer scores tabs for a human to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    os.environ.setdefault("MADX_OFFLINE", "1")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import torch
    from test_app import _free_port, make_assets  # the same asset tree as the API tests

    from app import build_app, launch_kwargs
    from app.state import create_state

    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "assets").mkdir()
    state = create_state(tmp / "assets", tmp / "work")
    make_assets(state.registry.model()[0], tmp / "assets")
    state.registry.scan_shipped()
    demo = build_app(state)
    demo.queue().launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True, **launch_kwargs(state))
    yield demo.local_url
    demo.close()


def _shot(page, name: str) -> None:
    out = os.environ.get("MADX_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


def test_ner_tabs_and_chart_in_chromium(app_url):
    from playwright.sync_api import expect, sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists()
    text = "Amina Yusuf joined the World Health Organization in Geneva."
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_url, wait_until="domcontentloaded")
            box = page.locator("#ner-text textarea")
            expect(box).to_be_visible(timeout=30_000)
            box.fill(text)
            page.locator("#ner-run").click()
            # The highlighted output shows the whole text once the answer arrives.
            expect(page.locator("#ner-out")).to_contain_text("Geneva", timeout=60_000)
            expect(page.get_by_text("Parameter budget")).to_be_visible(timeout=30_000)  # the stack diagram
            _shot(page, "explore")

            page.get_by_role("tab", name="Transfer scores").click()
            chart = page.locator(".js-plotly-plot").first
            expect(chart).to_be_visible(timeout=30_000)
            assert page.locator(".js-plotly-plot svg").count() > 0
            _shot(page, "scores")

            page.get_by_role("tab", name="How it works").click()
            expect(page.get_by_text("Try it on your own text")).to_be_visible(timeout=10_000)
        finally:
            browser.close()
