"""The tasks MAD-X is trained and scored on: named-entity recognition and extractive question answering.

Everything that differs between them lives here, one class per task (as transformers has one head class per task):
how its data is read, turned into training features and a loss, which head it needs, how it is scored and how its
predictions are written. The rest of the code looks a task up in `TASKS` instead of branching on its name, so a new
task is one new class here.
"""

from __future__ import annotations

from pathlib import Path

from . import data as D
from . import features as F
from .adapters import Stack
from .evaluation import evaluate_ner, evaluate_qa
from .model import AdapterModel


class Task:
    """What one task needs from data to score; subclasses fill it in."""

    name: str  # the key in TASKS and in result rows: "ner", "qa"
    title: str  # for people: "NER", "QA"
    data_help: str  # the file format it reads, for error messages
    head_title: str  # what its prediction head outputs, for people
    metrics: dict[str, str]  # result-row metric -> its name in charts and sentences; "f1" first (the headline score)
    scale: float  # results.json keeps this task's scores on 0-1 (100) or already on 0-100 (1)
    min_max_length: int = 0  # the shortest window that still fits the task's input (QA: question + context)
    shipped_data: str = ""  # what the shipped task adapters were trained on (the app says so)

    def load(self, source: str | Path) -> list:
        """Examples from a file or `hf:DATASET[:CONFIG][:SPLIT]`."""
        raise NotImplementedError

    def read(self, path: str | Path) -> list:
        """Examples from a local file (an upload)."""
        raise NotImplementedError

    def labels(self, examples: list) -> list[str] | None:
        """The head's label set, read off the training data (None: the task has no labels)."""
        return None

    def keep_labels(self, examples: list, keep: set[str]) -> list:
        """The examples with entity types outside `keep` turned into O (nothing to do for tasks without labels)."""
        return examples

    def gold_for_head(self, model: AdapterModel, head: str, examples: list) -> list:
        """The examples restricted to what `head` can predict, so that a type it never learnt is not held against it."""
        return examples

    def max_length(self, asked: int) -> int:
        """The window length to train with: what was asked, raised to the task's minimum."""
        return max(asked, self.min_max_length)

    def features(self, tokenizer, examples: list, labels: list[str] | None, max_length: int) -> list[dict]:
        """Tokenised training features."""
        raise NotImplementedError

    def add_head(self, model: AdapterModel, name: str, labels: list[str] | None) -> None:
        raise NotImplementedError

    def loss(self, model: AdapterModel, batch: list[dict], pad_id: int, stack: Stack | None, head: str):
        """(mean loss of the batch, its weight): the tokens or examples the mean is over (see training.run_training)."""
        raise NotImplementedError

    def evaluate(self, model, tokenizer, examples: list, stack: Stack | None, head: str, lang: str | None):
        """(all scores, predictions) on labelled examples."""
        raise NotImplementedError

    def row_metrics(self, scores: dict) -> dict[str, float]:
        """The scores a result row keeps, by metric name."""
        raise NotImplementedError

    def write_predictions(self, path: str | Path, examples: list, predictions) -> None:
        raise NotImplementedError


class NerTask(Task):
    name, title, data_help = "ner", "NER", "CoNLL (token label per line)"
    head_title = "NER tagging"
    metrics = {"f1": "entity F1"}
    scale = 100.0  # seqeval's F1 is a fraction
    shipped_data = "CoNLL-2003 English train"

    def load(self, source):
        return D.load_ner(source)

    def read(self, path):
        return D.read_conll(path)

    def labels(self, examples):
        return D.label_list(examples)

    def keep_labels(self, examples, keep):
        return D.restrict_labels(examples, keep)

    def gold_for_head(self, model, head, examples):
        known = {label[2:] for label in model.heads[head].config.label2id if label != "O"}
        return D.restrict_labels(examples, known)

    def features(self, tokenizer, examples, labels, max_length):
        label2id = {label: i for i, label in enumerate(labels)}
        return F.encode_ner(tokenizer, examples, label2id, max_length=max_length)

    def add_head(self, model, name, labels):
        model.add_tagging_head(name, labels, overwrite=True)

    def loss(self, model, batch, pad_id, stack, head):
        b = F.pad_batch(batch, pad_id, ("input_ids", "attention_mask", "labels"), model.device)
        weight = int((b["labels"] != -100).sum())  # the labelled tokens: the loss is their mean
        return model(b["input_ids"], b["attention_mask"], adapters=stack, head=head, labels=b["labels"]).loss, weight

    def evaluate(self, model, tokenizer, examples, stack, head, lang):
        return evaluate_ner(model, tokenizer, examples, stack, head)

    def row_metrics(self, scores):
        return {"f1": scores["f1"]}

    def write_predictions(self, path, examples, predictions):
        D.write_conll(path, [s.tokens for s in examples], predictions)


class QATask(Task):
    name, title, data_help = "qa", "QA", "SQuAD 1.1 JSON"
    head_title = "QA answer start/end"
    metrics = {"f1": "F1", "em": "EM"}  # EM: exact match
    scale = 1.0  # SQuAD scores are in percent already
    min_max_length = 384  # a question and a useful piece of context need the long window
    shipped_data = "SQuAD train (English)"

    def load(self, source):
        return D.load_squad(source)

    def read(self, path):
        return D.read_squad(path)

    def features(self, tokenizer, examples, labels, max_length):
        return F.prepare_qa_features(tokenizer, examples, max_length=max_length, stride=128, train=True)

    def add_head(self, model, name, labels):
        model.add_qa_head(name, overwrite=True)

    def loss(self, model, batch, pad_id, stack, head):
        keys = ("input_ids", "attention_mask", "start_positions", "end_positions")
        b = F.pad_batch(batch, pad_id, keys, model.device)
        out = model(
            b["input_ids"],
            b["attention_mask"],
            adapters=stack,
            head=head,
            start_positions=b["start_positions"],
            end_positions=b["end_positions"],
        )
        return out.loss, len(batch)  # the mean is over examples

    def evaluate(self, model, tokenizer, examples, stack, head, lang):
        return evaluate_qa(model, tokenizer, examples, stack, head, lang=lang)

    def row_metrics(self, scores):
        return {"f1": scores["f1"], "em": scores["exact_match"]}

    def write_predictions(self, path, examples, predictions):
        D.write_json(path, predictions)


TASKS: dict[str, Task] = {"ner": NerTask(), "qa": QATask()}


def get_task(task: str | Task) -> Task:
    """A task by name (or the task itself); an unknown name is a one-line error that lists the known ones."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use {' or '.join(repr(t) for t in TASKS)}")
    return TASKS[task]
