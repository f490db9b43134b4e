"""Hugging Face Spaces entry point: `python app.py` serves the MAD-X app on 127.0.0.1:7860.

GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose another address (a Space sets GRADIO_SERVER_NAME=0.0.0.0);
MADX_ASSETS points at the shipped adapters and results, MADX_APP_DIR at where trained adapters are written.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import time  # noqa: E402

import torch  # noqa: E402

from app import build_app, launch_kwargs  # noqa: E402
from madx_core.backbones import backbone_origin  # noqa: E402


def main() -> None:
    started = time.perf_counter()
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # a free Space has 2 cores
    demo = build_app()
    state = demo.state
    model, _ = state.registry.model()  # load the default backbone now, so the first user does not wait for it
    print(f"backbone: {backbone_origin(model)}", flush=True)  # which weights every adapter is checked against
    print(f"MAD-X app ready in {time.perf_counter() - started:.1f} s", flush=True)
    demo.queue(max_size=64).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(state),
    )


if __name__ == "__main__":
    main()
