"""Train: small MAD-X jobs on a CPU: a language adapter (masked LM on text) or a task adapter (NER / QA data).

One job runs at a time (see `state.JobRunner`), on a private copy of the backbone; the finished adapter is loaded
into the serving model, so it is selectable in Explore at once, and it can be downloaded as an AdapterHub zip. The
jobs and their inputs are in train_jobs.py; this module shows their progress and builds the tab.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from madx_core.backbones import hub_reachable
from madx_core.tasks import TASKS

from .display import backbone_choices
from .errors import Busy, friendly
from .inputs import check_name, visitor_address
from .jobs import Job
from .limits import MAX_TRAIN_SECONDS, MAX_TRAIN_STEPS
from .registry import NO_ADAPTER
from .state import AppState
from .train_jobs import (
    LANGUAGE_LR,
    TASK_LR,
    collect_texts,
    english_anchor,
    forget_upload,
    language_job,
    read_task_data,
    sample_text,
    task_job,
    train_config,
)

# ----------------------------------------------------------------------------------------------------------
# Progress display


def loss_figure(job: Job | None) -> go.Figure:
    fig = go.Figure()
    if job is not None and job.steps:
        fig.add_trace(go.Scatter(x=list(job.steps), y=list(job.losses), mode="lines+markers", name="loss"))
    fig.update_layout(
        title="training loss, live",
        xaxis_title="step",
        yaxis_title="loss (masked LM or task)",
        height=320,
        margin=dict(l=50, r=20, t=50, b=40),
    )
    return fig


def progress_line(job: Job) -> str:
    """The job's progress as a text bar, shown in the status line beside the loss curve (never over it)."""
    if not job.total:
        return f"⏳ {job.state} …"
    done = job.step / job.total
    bar = "▰" * round(12 * done) + "▱" * (12 - round(12 * done))
    loss = f" · loss {job.losses[-1]:.3f}" if job.losses else ""
    return f"⏳ {bar} **{100 * done:.0f}%** · {job.summary()}{loss}"


UPDATE_SECONDS = 0.5  # how often a running job's curve and status are sent to the page


def follow(state: AppState, job: Job, renamed: str = ""):
    """Yield (status, loss figure, download) while the job runs: a new curve whenever new steps were logged."""
    shown = -1
    while not job.finished.wait(timeout=UPDATE_SECONDS):
        if len(job.steps) != shown:
            shown = len(job.steps)
            yield progress_line(job) + renamed, loss_figure(job), gr.skip()
    if job.state == "done":
        zip_path = state.registry.zip_adapter(job.entry.name)
        status = (
            f"✅ Trained {job.entry.kind} adapter **{job.entry.name}**: {job.message}.{renamed} It is now selectable "
            f"in Explore (and in every other open page); download it below in AdapterHub format."
        )
        yield status, loss_figure(job), str(zip_path)
    elif job.state == "failed":
        raise ValueError(job.message)  # an error in the UI and for API clients, not a status line
    elif job.state == "cancelled":
        yield (
            f"⚠️ Cancelled at step {job.step} of {job.total}; nothing was saved.",
            loss_figure(job),
            gr.skip(),
        )
    else:
        yield f"⚠️ {job.message}", loss_figure(job), gr.skip()


def busy_status(e: Exception) -> tuple:
    """Another visitor's job is running: said in the status line, not as an error on every output."""
    return f"⏳ Not started: {e}", gr.skip(), gr.skip()


def renamed_note(wanted: str, name: str) -> str:
    return "" if wanted == name else f" (the name {wanted!r} is taken, so it is saved as **{name}**)"


# ----------------------------------------------------------------------------------------------------------
# The tab


def build(state: AppState) -> dict:
    reg = state.registry
    gr.Markdown(
        f"Small jobs that fit a free CPU Space: at most **{MAX_TRAIN_STEPS} steps** and **{MAX_TRAIN_SECONDS // 60} "
        "minutes**, one job at a time for everyone (others are told when the machine is busy). On 2 CPU cores a step "
        "takes a few seconds. Real MAD-X adapters train for far longer (the paper: 250k steps), so expect a "
        "teaching-sized adapter."
    )
    backbone = gr.Dropdown(
        backbone_choices(state), value=reg.default_backbone, label="backbone", allow_custom_value=True
    )
    with gr.Tabs():
        with gr.Tab("Language adapter"):
            gr.Markdown(
                "Masked-language-model training on text of one language. The backbone and its MLM head stay frozen; "
                "only the language adapter (reduction factor 2) and its invertible NICE adapter learn."
            )
            with gr.Row():
                lang_name = gr.Textbox(label="language code / adapter name", value="my-lang", max_lines=1)
                lang_steps = gr.Slider(1, MAX_TRAIN_STEPS, value=50, step=1, label="steps", elem_id="lang-steps")
                lang_lr = gr.Number(value=LANGUAGE_LR, label="learning rate")
            lang_text = gr.Textbox(label="text (one sentence or paragraph per line)", lines=6, elem_id="lang-text")
            sample_btn = gr.Button(
                "Fill in a sample text (Swahili, written for this app)", size="sm", elem_id="lang-sample"
            )
            with gr.Row():
                lang_files = gr.File(label="or upload UTF-8 .txt files", file_count="multiple", file_types=[".txt"])
                hub_dataset = gr.Textbox(
                    label="or a Hub dataset with a 'text' column (online only)",
                    value="",
                    placeholder="e.g. wikimedia/wikipedia:20231101.qu",
                    interactive=hub_reachable(),
                )
            with gr.Row():
                lang_batch = gr.Slider(1, 32, value=8, step=1, label="batch size")
                lang_seed = gr.Number(value=0, label="seed", precision=0)
            lang_anchored = gr.Checkbox(
                value=True,
                label="anchored to the English adapter: start from it and stay near its layer outputs (a variant "
                "beyond the paper, the CLI's default; on this backbone it transfers better than MAD-X's own recipe, "
                "see Transfer scores). Untick for MAD-X's recipe (random start, MLM only).",
            )
            lang_btn = gr.Button("Train language adapter", variant="primary", elem_id="lang-train")
        with gr.Tab("Task adapter"):
            gr.Markdown(
                "A task adapter (reduction factor 16) and its head, stacked on a frozen language adapter of the "
                "training data's language. Upload CoNLL (`token label` per line, blank line between sentences) for "
                "NER, or SQuAD 1.1 JSON for QA."
            )
            with gr.Row():
                task_kind = gr.Radio(list(TASKS), value="ner", label="task")
                task_name = gr.Textbox(label="adapter name", value="my-ner", max_lines=1)
                task_lang = gr.Dropdown(
                    [],
                    value="en" if "en" in reg.entries else NO_ADAPTER,
                    label="stacked on language adapter",
                    allow_custom_value=True,
                )
            task_files = gr.File(label="training data", file_types=[".txt", ".conll", ".json"])
            with gr.Row():
                task_steps = gr.Slider(1, MAX_TRAIN_STEPS, value=50, step=1, label="steps")
                task_lr = gr.Number(value=TASK_LR, label="learning rate")
                task_batch = gr.Slider(1, 32, value=8, step=1, label="batch size")
                task_seed = gr.Number(value=0, label="seed", precision=0)
            task_btn = gr.Button("Train task adapter", variant="primary")

    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=280):
            loss_plot = gr.Plot(label="loss", elem_id="loss-plot")
        with gr.Column(scale=2, min_width=260):
            status = gr.Markdown("No job started from this page yet.", elem_id="train-status")
            cancel_btn = gr.Button("Cancel my job", variant="stop")
            download = gr.File(label="the trained adapter (AdapterHub zip)", interactive=False, height=90)

    with gr.Accordion("Upload an adapter (AdapterHub zip)", open=False):
        gr.Markdown(
            "A zip of one AdapterHub adapter folder (`adapter_config.json` + `adapter.safetensors`, or a "
            "`pytorch_adapter.bin` of plain tensors; an optional head). Checked before use: at most 50 MB, no paths "
            "outside the folder, no links; weights are read as tensors only, never unpickled."
        )
        upload = gr.File(label="adapter zip", file_types=[".zip"])
        upload_btn = gr.Button("Load uploaded adapter")
        upload_status = gr.Markdown()

    # --- callbacks ---------------------------------------------------------------------------------------

    def start_and_follow(kind: str, wanted: str, backbone: str, make_work, started: str, request):
        """Reserve a name, start the job under it (or say the trainer is busy), then stream the job's progress."""
        name = reg.reserve(wanted)  # atomic: a name in use (registered, reserved or on disk) -> name-2
        try:
            job = state.jobs.start(kind, name, backbone, make_work(name), owner=getattr(request, "session_hash", None))
        except Busy as e:
            reg.release(name)
            yield busy_status(e)
            return
        except BaseException:
            reg.release(name)
            raise
        yield f"⏳ Started: {started}{renamed_note(wanted, name)}", loss_figure(None), None
        yield from follow(state, job, renamed_note(wanted, name))

    @friendly
    def train_language_adapter_ui(
        text: str,
        files: list[str] | None = None,
        name: str = "my-lang",
        steps: float = 50,
        learning_rate: float = LANGUAGE_LR,
        hub_dataset: str = "",
        backbone: str = "",
        batch_size: float = 8,
        seed: float = 0,
        anchored: bool = True,
        request: gr.Request = None,
    ):
        backbone = reg.check_backbone(backbone)
        name = check_name(name, "language code / adapter name")
        anchor = english_anchor(state, backbone) if anchored else None
        config = train_config(steps, learning_rate, batch_size, 128, seed)
        texts = collect_texts(text, files, hub_dataset)
        if reg.model(backbone)[0].lm_head is None:
            raise ValueError(
                f"backbone {backbone} has no masked-LM head here, so it cannot train a language adapter "
                "(the offline backbone's head ships as assets/mlm_head/); task adapters still train"
            )
        yield from start_and_follow(
            "language",
            name,
            backbone,
            lambda final: language_job(state, texts, final, backbone, config, anchor),
            f"{len(texts):,} lines of text, {config.steps} steps, "
            + ("anchored to the English adapter." if anchor else "MAD-X's recipe (random start)."),
            request,
        )

    @friendly
    def train_task_adapter_ui(
        file: str | None,
        task: str = "ner",
        name: str = "my-ner",
        language_adapter: str = "en",
        steps: float = 50,
        learning_rate: float = TASK_LR,
        backbone: str = "",
        batch_size: float = 8,
        seed: float = 0,
        request: gr.Request = None,
    ):
        backbone = reg.check_backbone(backbone)  # before anything is read or loaded: only the app's own backbones
        name = check_name(name)
        config = train_config(steps, learning_rate, batch_size, 128, seed)
        examples = read_task_data(task, file)
        yield from start_and_follow(
            "task",
            name,
            backbone,
            lambda final: task_job(state, task, examples, final, language_adapter, backbone, config),
            f"{len(examples):,} {task.upper()} examples, {config.steps} steps.",
            request,
        )

    def cancel(request: gr.Request):
        job = state.jobs.current()
        if job is None or job.finished.is_set():
            return "No job is running."
        if job.owner != getattr(request, "session_hash", None):
            return "The running job was started from another page; only its owner can cancel it."
        state.jobs.cancel(job.id)
        return "Cancelling after the current step …"

    @friendly
    def upload_adapter(file: str, backbone: str = "", request: gr.Request = None):
        if not file:
            raise ValueError("choose an adapter zip to upload first")
        try:
            entry = reg.upload_zip(Path(file), backbone, visitor=visitor_address(request))
        finally:
            forget_upload(file)
        what = f"{entry.task.upper()} task adapter" if entry.kind == "task" else "language adapter"
        return f"✅ Loaded **{entry.name}** ({what}); select it in Explore."

    outputs = [status, loss_plot, download]
    # The status line carries the progress; Gradio's overlay would cover the live curve, so it is hidden.
    training = dict(concurrency_limit=4, concurrency_id="training", show_progress="hidden")
    lang_event = lang_btn.click(
        train_language_adapter_ui,
        [
            lang_text,
            lang_files,
            lang_name,
            lang_steps,
            lang_lr,
            hub_dataset,
            backbone,
            lang_batch,
            lang_seed,
            lang_anchored,
        ],
        outputs,
        api_name="train_language_adapter",
        **training,
    )
    task_event = task_btn.click(
        train_task_adapter_ui,
        [task_files, task_kind, task_name, task_lang, task_steps, task_lr, backbone, task_batch, task_seed],
        outputs,
        api_name="train_task_adapter",
        **training,
    )
    cancel_btn.click(cancel, None, status, api_name="cancel_training", queue=False)
    upload_event = upload_btn.click(
        upload_adapter, [upload, backbone], upload_status, api_name="upload_adapter", concurrency_limit=2
    )
    task_kind.change(lambda t: "my-" + t, task_kind, task_name, api_visibility="private", queue=False)
    sample_btn.click(
        lambda: ("\n".join(sample_text()), "my-sw"),
        None,
        [lang_text, lang_name],
        api_visibility="private",
        queue=False,
    )
    return {
        "task_lang": task_lang,
        "status": status,
        "upload_status": upload_status,
        "events": (lang_event, task_event, upload_event),
    }
