"""What the shipped results say, in sentences generated from assets/results.json: the swap verdict, a reading per
task, and how much the shipped adapters were trained."""

from __future__ import annotations

import json

from madx_core.results import reading, swap_helps, zero_shot_means
from madx_core.results import summarise as core_summarise
from madx_core.tasks import TASKS, get_task

from .charts import curve_rows, main_source, system_name
from .entry import ANCHORED
from .state import AppState


def shipped_reading(state: AppState) -> str:
    """What the shipped results say about swapping adapters, in sentences generated from the results themselves."""
    shipped = [r for r in state.results.rows() if r.get("origin") == "shipped"]
    lines = reading(core_summarise(shipped)) if shipped else []
    if not lines:
        return ""
    body = "\n".join(f"- {line}" for line in lines)
    return (
        "**What these results show** (generated from `assets/results.json`; one seed where n = 1, so differences of "
        "one or two points may be noise):\n" + body + "\n\nIn the paper, swapping in the target language's adapter "
        "is what makes MAD-X transfer better; on this small offline backbone MAD-X's own recipe does not. Target "
        "adapters anchored to the English one while they learn their language (a variant beyond the paper) remove "
        "that loss on NER and help it a little; on QA (German, Arabic, Chinese and Spanish, high-resource languages "
        "of the backbone's pre-training) no language adapter measured beats using none: –LAD's task adapter trained "
        "one more epoch over the target adapters scores level with –LAD, and the same extra epoch without them does "
        "as well. The README's Results section lists everything that was tried, with the command for each."
    )


def _shipped_summary(state: AppState) -> list[dict]:
    shipped = [r for r in state.results.rows() if r.get("origin") == "shipped"]
    return core_summarise(shipped) if shipped else []


def _results_config(state: AppState) -> dict:
    try:
        data = json.loads(state.results.shipped_file.read_text(encoding="utf-8"))
        config = (data.get("meta") or {}).get("config") or {}
        return config if isinstance(config, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


# The anchored variants beyond the paper, in words, for the intro's verdict
VARIANTS = {
    "madx-anchor": "target adapters anchored to the English one while they learn their language",
    "madx-lad-anchor": "target adapters anchored to the backbone itself under a task adapter trained with no "
    "language adapter",
    "madx-lad-pool": "those backbone-anchored adapters under –LAD's task adapter trained one more epoch over them",
}


def swap_verdict(state: AppState) -> str:
    """One sentence for the app's intro: does swapping in the target adapter help in the shipped results (MAD-X's
    recipe, and the anchored variant where the results have it)?"""
    summary = _shipped_summary(state)
    helps, hurts, anchored = [], [], {system: [] for system in VARIANTS}
    for task in TASKS.values():
        systems = zero_shot_means(summary, task.name, "f1").get("systems", {}) if summary else {}
        if "madx" not in systems or not ({"madx-src", "madx-lad"} & set(systems)):
            continue
        (helps if swap_helps(systems, "madx")[0] else hurts).append(task.title)
        for system in VARIANTS:
            if system in systems and swap_helps(systems, system)[0]:
                anchored[system].append(task.title)
    helped = [f"{what} ({' and '.join(anchored[system])})" for system, what in VARIANTS.items() if anchored[system]]
    variant = ""
    if helped:
        who = "A variant beyond the paper does" if len(helped) == 1 else "Variants beyond the paper do"
        variant = f" {who} help: {'; and '.join(helped)}."
    if hurts and not helps:
        return (
            f"**On this small offline backbone MAD-X's own recipe does not work as the paper reports**: in the shipped "
            f"results ({' and '.join(hurts)}), swapping in the target language's adapter transfers no better than "
            f"keeping the English one or using none.{variant} *Transfer scores* shows the numbers."
        )
    if hurts:
        return (
            f"In the shipped results swapping helps for {' and '.join(helps)} but not for {' and '.join(hurts)}."
            f"{variant} *Transfer scores* shows the numbers."
        )
    if helps:
        return f"In the shipped results swapping helps ({' and '.join(helps)}); *Transfer scores* shows the numbers."
    return ""


# (system, what it does, the system it is compared with per language, that system in words): each swap against the
# stack its task adapter was trained on
PER_LANGUAGE = (
    ("madx", "swapping", "madx-src", "keeping the source adapter"),
    ("madx-anchor", "swapping in the anchored adapter (variant)", "madx-src", "keeping the source adapter"),
    ("madx-lad-anchor", "swapping in the backbone-anchored adapter (variant)", "madx-lad", "no language adapter"),
    ("madx-lad-pool", "swapping under the continued task adapter (variant)", "madx-lad-more", "its control"),
)


def task_reading(state: AppState, task: str) -> str:
    """What the shipped results say for one task, next to its charts: the verdict, per language, what is missing."""
    summary = _shipped_summary(state)
    t = get_task(task)
    label = f"{t.title} {t.metrics['f1']}"
    lines = [line for line in (reading(summary) if summary else []) if line.startswith(label)]
    out = [f"**Reading ({task.upper()}, generated from `assets/results.json`)**"]
    out += [f"- {line}" for line in lines] or ["- No shipped MAD-X results for this task."]
    rows = [r for r in summary if r["task"] == task and r["metric"] == "f1" and r["target"] != r["source"]]
    source = main_source(rows)  # per language from the main source; the other sources are the heat map's
    rows = [r for r in rows if r["source"] == source]
    by = {(r["system"], r["target"]): r["mean"] * t.scale for r in rows}
    targets = sorted({t for _, t in by})
    for system, what, ref, against in PER_LANGUAGE:
        pairs = [t for t in targets if (system, t) in by and (ref, t) in by]
        if not pairs:
            continue
        wins = [t for t in pairs if by[system, t] > by[ref, t]]
        per = ", ".join(f"{t} {by[system, t] - by[ref, t]:+.1f}" for t in pairs)
        lines_per = f"- Per language from {source}, {what} minus {against}: {per} points"
        out.append(lines_per + f" ({what.split(' (')[0]} wins for {len(wins)} of {len(pairs)}).")
    seeds = {r["n"] for r in rows}
    if seeds and max(seeds) == 1:
        out.append("- One training run per system (no error bars): differences of one or two points may be noise.")
    config = _results_config(state)
    task_cfg = (config.get("tasks") or {}).get(task) or {}
    wanted = task_cfg.get("systems") or config.get("systems") or []
    present = {r["system"] for r in summary if r["task"] == task}
    missing = [system_name(x) for x in wanted if x not in present]
    if missing:
        out.append(f"- Configured but not in these results (not run): {', '.join(missing)}.")
    base = [r for r in summary if (r["task"], r["metric"], r["system"]) == (task, "f1", "baseline")]
    own = [r for r in base if r["target"] == r["source"]]
    if own:  # how well the baseline learned its source task says whether the comparison is like with like
        epochs = task_cfg.get("full_epochs")
        zero = [r["mean"] * t.scale for r in base if r["target"] != r["source"]]
        out.append(
            f"- The full fine-tuning baseline ({f'{epochs:g} epochs, ' if epochs else ''}{own[0]['n']} seed(s)) "
            f"scores {own[0]['mean'] * t.scale:.1f} on {own[0]['source']} itself"
            + (f" and {sum(zero) / len(zero):.1f} zero-shot on average" if zero else "")
            + "; it trains every weight of the backbone (MAD-X: the adapters only)."
        )
    return "\n".join(out)


def training_line(state: AppState) -> str:
    """One sentence: how much the shipped adapters were trained (from results.json's configuration)."""
    config = _results_config(state)
    la, tasks = config.get("lang_adapter") or {}, config.get("tasks") or {}
    parts = []
    if la.get("steps"):
        parts.append(
            f"language adapters {la['steps']} steps of {la.get('batch_size')} lines (the paper: 250,000 of 64)"
        )
    for task in TASKS.values():
        if (tasks.get(task.name) or {}).get("epochs"):
            parts.append(f"{task.title} task adapters {tasks[task.name]['epochs']:g} epoch(s) of English data")
    return ("The shipped adapters are small: " + "; ".join(parts) + ".") if parts else ""


def adapters_summary(state: AppState) -> str:
    """Which adapters ship and how much each was trained, from the configuration recorded in results.json."""
    config = _results_config(state)
    la = config.get("lang_adapter") or {}
    tasks = config.get("tasks") or {}
    reg = state.registry
    langs = sorted(e.name for e in reg.language_adapters() if e.origin == "shipped")
    noinv = sorted(e.name for e in reg.language_adapters() if e.origin == "shipped -INV")
    lines = []
    if la:
        lines.append(
            f"- **Language adapters** ({', '.join(langs) or 'none'}): masked-LM training, {la.get('steps')} steps of "
            f"{la.get('batch_size')} lines (≤ {la.get('max_length')} tokens) at learning rate {la.get('lr')}, "
            f"reduction factor {la.get('reduction_factor')}, with an invertible NICE adapter. The paper trains "
            "250,000 steps of 64: these are small, teaching-sized adapters."
        )
    if noinv:
        lines.append(f"- **–INV language adapters** ({', '.join(noinv)}): the same without the invertible adapter.")
    anchored = sorted(e.name for e in reg.language_adapters() if e.origin == ANCHORED)
    if anchored:
        weight = (config.get("madx_anchor") or {}).get("weight")
        lines.append(
            f"- **Anchored language adapters** ({', '.join(anchored)}; a variant beyond the paper, the transfer "
            f"results' *{system_name('madx-anchor')}*): each starts as a copy of the English adapter and trains "
            f"with the same masked-LM recipe plus {weight} × how far its layer outputs move from the English "
            "adapter's on the same text, so it learns its language while staying in the space the English task "
            "adapter was trained in. Use them with the `ner` task adapter."
        )
    summary = _shipped_summary(state)
    english = {
        (r["task"], r["system"]): r["mean"] * TASKS[r["task"]].scale
        for r in summary
        if r["target"] == r["source"] and r["metric"] == "f1" and r["task"] in TASKS
    }
    for task, data in ((t.name, t.shipped_data) for t in TASKS.values()):
        cfg = tasks.get(task) or {}
        if not cfg:
            continue
        names = [e.name for e in reg.task_adapters(task) if e.origin == "shipped"]
        scores = ", ".join(
            f"{name} {english[task, system]:.1f}"
            for name, system in ((task, "madx"), (f"{task}_lad", "madx-lad"))
            if name in names and (task, system) in english
        )
        budget = f"{cfg['epochs']:g} epoch(s)" if cfg.get("epochs") else f"{cfg.get('steps')} steps"
        lines.append(
            f"- **{task.upper()} task adapters** ({', '.join(names)}): {budget} of {data}, "
            f"batches of {cfg.get('batch_size')} at learning rate {cfg.get('lr')}, reduction factor 16. "
            f"`{task}` was trained on top of the English language adapter (MAD-X), `{task}_lad` with no language "
            "adapter (MAD-X –LAD)." + (f" English test F1 (0-100): {scores}." if scores else "")
        )
    return "\n".join(lines) or "The shipped results record no training configuration."


def _trained(info: dict | None) -> str:
    """ " trained N steps (run `name`)" for the task adapters a recipe table was scored with, or ""."""
    if not info or not (info.get("steps") or info.get("epochs")):
        return ""
    budget = f"{info['epochs']:g} epoch(s)" if info.get("epochs") else f"{info['steps']} steps"
    return f" trained {budget} (run `{info.get('run')}`)"


def curve_reading(recipes: list[dict], task_adapters: dict | None = None) -> str:
    """What the learning curve shows, generated from assets/recipes.json: loss falls with training; does the gain?
    `task_adapters`: how the English task adapters it was scored with were trained (recipes.json), when known."""
    curves = curve_rows(recipes)
    if not curves:
        return ""
    langs = sorted({lang for lang, _ in curves})
    points = [(lang, batch, r) for (lang, batch), rows in curves.items() for r in rows]
    # each language's points by the sequences trained on (steps x batch), both batch sizes together
    by_lang = {lang: sorted((p for p in points if p[0] == lang), key=lambda p: p[2]["steps"] * p[1]) for lang in langs}
    most = {lang: ps[-1][2] for lang, ps in by_lang.items()}  # the point trained on the most sequences
    loss = ", ".join(f"{lang} {most[lang]['mlm_loss_without']:.1f} → {most[lang]['mlm_loss']:.1f}" for lang in langs)
    per = "; ".join(
        f"{lang} " + ", ".join(f"{r['test']['gain']:+.1f} at {r['steps'] * batch:,}" for _, batch, r in ps)
        for lang, ps in by_lang.items()
    )
    above = [p for p in points if p[2]["test"]["gain"] > 0]
    seeds = max(r["test"]["seeds"] for _, _, r in points)
    batches = sorted({batch for _, batch in curves})
    at_most = sum(r["test"]["gain"] for r in most.values()) / len(langs)
    if not above:
        verdict = "Swapping in the adapter never beats keeping the English one at any budget measured here"
    else:
        wins = ", ".join(f"{lang} at {r['steps'] * b:,} sequences, {r['test']['gain']:+.1f}" for lang, b, r in above)
        verdict = (
            f"Swapping in the adapter beats keeping the English one in {len(above)} of {len(points)} points ({wins})"
        )
    return (
        "**Learning curve** (generated from `assets/recipes.json`; MAD-X's recipe from a random start, batches of "
        + " and ".join(str(b) for b in batches)
        + f"; NER test F1, mean over {seeds} English task adapters{_trained(task_adapters)}): training the language "
        "adapter on more text "
        f"lowers its held-out MLM loss (no adapter → the most training: {loss} nats), so it does learn the language. "
        f"{verdict}. Swap − keep per language, by sequences trained on: {per}. With the most training the mean over "
        f"languages is {at_most:+.1f}."
        + (
            " A lower MLM loss does not make a better adapter for transfer here: the English task adapter was "
            "trained on the English adapter's output, and on average it reads a target adapter's output worse than "
            "that, however little or much the target adapter was trained."
            if at_most <= 0
            else ""
        )
        + _anchored(recipes)
    )


def _anchored(recipes: list[dict]) -> str:
    """A sentence on the anchored variant (recipes anchor-W) when recipes.json has it: its mean swap − keep on test."""
    rows = [r for r in recipes if str(r.get("recipe", "")).startswith("anchor-") and "test" in r]
    if not rows:
        return ""
    best = max({r["recipe"] for r in rows}, key=lambda n: sum(r["test"]["gain"] for r in rows if r["recipe"] == n))
    mine = sorted((r for r in rows if r["recipe"] == best), key=lambda r: r["target"])
    mean = sum(r["test"]["gain"] for r in mine) / len(mine)
    per = ", ".join(f"{r['target']} {r['test']['gain']:+.1f}" for r in mine)
    return (
        f" A variant beyond the paper comes closest: a target adapter that starts from the English one and is kept "
        f"near its layer outputs while it learns the language ({best}): swap − keep {per}, mean {mean:+.1f}"
        + (", so it helps here." if mean > 0 else ", so even it does not beat keeping the English adapter on average.")
    )
