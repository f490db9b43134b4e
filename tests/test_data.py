"""Data loading, label alignment, QA windows and span mapping, metrics against hand-computed cases.

The tests marked integration read the shared data (real CoNLL, MasakhaNER, XQuAD) or the reference tokenizer.
"""

import pytest
import torch

from madx_core import data as D
from madx_core import features as F
from madx_core import metrics as M


def test_read_conll_and_restrict(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("-DOCSTART- O\n\nJohn B-PER\nlives O\nin O\nParis B-LOC\n\nMonday B-DATE\n")
    sents = D.read_conll(f)
    assert [s.tokens for s in sents] == [["John", "lives", "in", "Paris"], ["Monday"]]
    assert [s.labels for s in sents] == [["B-PER", "O", "O", "B-LOC"], ["B-DATE"]]
    assert D.restrict_labels(sents, {"PER", "LOC"})[1].labels == ["O"]
    assert D.label_list(sents) == ["O", "B-DATE", "I-DATE", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.mark.parametrize(
    "content, message", [(b"John B-PER\nlonely\n", "line 2"), (b"\x00\x01\x02", "binary")], ids=["no label", "binary"]
)
def test_bad_conll_names_the_problem(tmp_path, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        D.read_conll(bad)


@pytest.mark.integration
def test_masakhaner_reads_with_all_its_labels(data_dir):
    swa = D.read_conll(data_dir / "ner" / "swa" / "test.txt")
    assert len(swa) > 500 and {"B-PER", "B-LOC", "B-ORG", "B-DATE"} <= {lab for s in swa for lab in s.labels}


@pytest.mark.integration
def test_first_subtoken_gets_the_label(reference_tokenizer):
    sent = D.NerSentence(["Kawann", "Short", "played", "in", "Charlotte"], ["B-PER", "I-PER", "O", "O", "B-LOC"])
    label2id = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}
    (f,) = F.encode_ner(reference_tokenizer, [sent], label2id)
    assert f["labels"][0] == -100 and f["labels"][-1] == -100  # <s> and </s>
    seen = set()
    for w, lab in zip(f["word_ids"], f["labels"], strict=True):
        if w is None:
            continue
        if w in seen:
            assert lab == -100  # later sub-tokens of a word are ignored
        else:
            assert lab == label2id[sent.labels[w]]
            seen.add(w)
    assert seen == set(range(5))
    assert len(f["input_ids"]) > 7  # "Kawann" is split into several pieces


@pytest.mark.integration
def test_long_sentences_are_windowed_without_losing_words(reference_tokenizer, data_dir):
    sents = D.read_conll(data_dir / "ner" / "en" / "test.txt")
    label2id = {lab: i for i, lab in enumerate(D.label_list(sents))}
    features = F.encode_ner(reference_tokenizer, sents, label2id, max_length=16)
    assert all(len(f["input_ids"]) <= 16 for f in features if len(set(f["word_ids"])) > 2)
    covered = {(f["sentence"], w) for f in features for w in f["word_ids"] if w is not None}
    # every word with at least one sub-token is in some window; predictions map back to every word
    logits = [torch.zeros(len(f["input_ids"]), len(label2id)) for f in features]
    labels, probs = F.ner_word_predictions(
        features, logits, {i: lab for lab, i in label2id.items()}, [len(s.tokens) for s in sents]
    )
    assert [len(x) for x in labels] == [len(s.tokens) for s in sents]
    assert len(covered) == sum(len(s.tokens) for s in sents)


@pytest.mark.integration
@pytest.mark.parametrize("lang", ["en", "ar", "zh"])
def test_qa_windows_map_answers_back(reference_tokenizer, data_dir, lang):
    examples = D.read_squad(data_dir / "qa" / f"xquad.{lang}.json")
    features = F.prepare_qa_features(reference_tokenizer, examples, max_length=128, stride=32)
    assert len(features) > len(examples)  # long contexts overflow into several windows
    exact = inside = 0
    for f in features:
        if f["start_positions"] == 0:
            continue
        ex = examples[f["example_index"]]
        a = f["offset_mapping"][f["start_positions"]][0]
        b = f["offset_mapping"][f["end_positions"]][1]
        gold = ex.answers[0]["text"]
        inside += gold in ex.context[a:b]
        exact += ex.context[a:b] == gold
        assert len(ex.context[a:b]) <= len(gold) + 12  # at most a piece of slack on each side
    assert inside > len(examples) / 2 and exact / inside > 0.95, (exact, inside)


@pytest.mark.integration
def test_decode_qa_picks_best_span_across_windows(reference_tokenizer):
    context = "Nairobi is the capital of Kenya. " * 20 + "Dodoma is the capital of Tanzania."
    ex = D.QAExample("q1", "t", context, "What is the capital of Tanzania?", [])
    features = F.prepare_qa_features(reference_tokenizer, [ex], max_length=64, stride=16, train=False)
    assert len(features) > 2
    target = context.index("Dodoma")

    def logits_at(f: dict, char: int | None, value: float = 10.0) -> torch.Tensor:
        """`value` at the token of `f` that starts at character `char` of the context (None: the first question
        token, which has no offset), zero elsewhere."""
        out = torch.zeros(len(f["input_ids"]))
        for k, o in enumerate(f["offset_mapping"]):
            if (o is None and char is None and k > 0) or (o is not None and o[0] == char):
                out[k] = value
                break
        return out

    starts = [logits_at(f, target) for f in features]
    pred = F.decode_qa([ex], features, starts, [s.clone() for s in starts])["q1"]
    assert (pred.text, pred.start, pred.end) == ("Dodoma", target, target + len("Dodoma"))
    # The question's tokens score highest, but they are not in the context: the best context span wins ...
    first = features[0]
    question = logits_at(first, None, 20.0) + logits_at(first, 0)
    pred = F.decode_qa([ex], [first], [question], [question.clone()])["q1"]
    assert (pred.text, pred.start) == ("Nairobi", 0)
    # ... and when the only candidates are outside the context, there is no answer rather than a wrong one.
    pred = F.decode_qa([ex], [first], [logits_at(first, None)], [logits_at(first, None)], n_best=1)["q1"]
    assert (pred.text, pred.start, pred.end) == ("", -1, -1)


@pytest.mark.integration
def test_split_by_article_is_the_same_in_every_language(data_dir):
    en = D.read_squad(data_dir / "qa" / "xquad.en.json")
    zh = D.read_squad(data_dir / "qa" / "xquad.zh.json")
    en_train, en_eval = D.split_by_article(en)
    zh_train, zh_eval = D.split_by_article(zh)
    assert {e.id for e in en_eval} == {e.id for e in zh_eval}  # XQuAD ids are shared across languages
    assert not {e.context for e in en_train} & {e.context for e in en_eval}
    assert 0.3 < len(en_eval) / len(en) < 0.7


def test_split_words_any_script():
    words = D.split_words("Hello, world! 東京に行く\x00 don't")
    assert [w for w, _, _ in words] == ["Hello", ",", "world", "!", "東", "京", "に", "行", "く", "don't"]
    text = "Hello, world!"
    assert all(text[a:b] == w for w, a, b in D.split_words(text))
    assert D.split_words("") == [] and D.split_words("\x01\x02") == []


def test_mask_tokens_is_seeded_and_masks_every_row():
    ids = torch.randint(5, 100, (4, 20))
    special = torch.zeros_like(ids)
    special[:, 0] = special[:, -1] = 1
    a = F.mask_tokens(ids, special, 4, 100, generator=torch.Generator().manual_seed(0))
    b = F.mask_tokens(ids, special, 4, 100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    inputs, labels = a
    assert ((labels != -100).sum(1) >= 1).all()
    assert (labels[:, 0] == -100).all() and (labels[:, -1] == -100).all()
    assert torch.equal(labels[labels != -100], ids[labels != -100])


def test_ner_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    s = M.ner_scores(gold, pred)
    # 3 gold entities, 3 predicted, 2 correct: P = R = F1 = 2/3
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["per_type_f1"]["PER"] == 1.0 and s["per_type_f1"]["LOC"] == 0.0


def test_squad_scores_by_hand():
    ex = [
        D.QAExample("1", "", "", "", [{"text": "the Denver Broncos", "answer_start": 0}]),
        D.QAExample("2", "", "", "", [{"text": "Santa Clara, California", "answer_start": 0}]),
    ]
    s = M.squad_scores({"1": "Denver Broncos", "2": "Santa Clara"}, ex)
    # 1: exact after removing "the"; 2: P = 2/2, R = 2/3 -> F1 = 0.8
    assert s["exact_match"] == pytest.approx(50.0)
    assert s["f1"] == pytest.approx(100 * (1 + 0.8) / 2)
    zh = [D.QAExample("3", "", "", "", [{"text": "北京大学", "answer_start": 0}])]
    assert M.squad_scores({"3": "北京"}, zh, lang="zh")["f1"] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)


@pytest.mark.integration
def test_hub_tables_convert_like_files(data_dir, monkeypatch):
    """`hf:` datasets (WikiANN/MasakhaNER/XQuAD layouts) give the same examples as the files; offline fails at once."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names))})
    ner = Dataset.from_dict({"tokens": [["Amina", "Juma", "yuko", "Arusha"]], "ner_tags": [[1, 2, 0, 3]]}, features)
    assert D.ner_from_dataset(ner) == [
        D.NerSentence(["Amina", "Juma", "yuko", "Arusha"], ["B-PER", "I-PER", "O", "B-LOC"])
    ]

    xquad = D.read_squad(data_dir / "qa" / "xquad.de.json")[:40]  # the Hub's XQuAD has no titles
    table = Dataset.from_list(
        [
            {
                "id": e.id,
                "context": e.context,
                "question": e.question,
                "answers": {
                    "text": [a["text"] for a in e.answers],
                    "answer_start": [a["answer_start"] for a in e.answers],
                },
            }
            for e in xquad
        ]
    )
    converted = D.squad_from_dataset(table)
    assert [(e.id, e.context, e.question, e.answers) for e in converted] == [
        (e.id, e.context, e.question, e.answers) for e in xquad
    ]
    contexts = [e.context for e in xquad]
    assert [e.article for e in converted] == [sorted(set(contexts), key=contexts.index).index(c) for c in contexts]

    assert D.texts_from_dataset(Dataset.from_dict({"text": ["Habari ", "", "za asubuhi"]})) == ["Habari", "za asubuhi"]
    monkeypatch.setenv("MADX_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="'unimelb-nlp/wikiann' needs the Hugging Face Hub"):
        D.load_ner("hf:unimelb-nlp/wikiann:sw:test")
