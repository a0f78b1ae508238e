"""CosyVoice2 text tokenizer: Qwen2 BPE from local files plus CosyVoice2's special tokens."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from a10tts.engine.tokenizer import (
    COSYVOICE2_SPECIAL_TOKENS,
    TextTokenizer,
    _build_from_vocab,
    write_demo_tokenizer,
)

DEMO_VOCAB_SIZE = 1000  # the tiny/demo model's text vocabulary

# Ids given by transformers' Qwen2TokenizerFast for the demo files after upstream's
# add_special_tokens(...) (recorded once; transformers is not a project dependency). They pin the
# Qwen2 pre-tokenisation (single digits, contractions, whitespace runs) and the special tokens.
HF_REFERENCE_IDS = {
    "Hello, world! It's 2024, they'll see.": [
        39, 68, 271, 78, 11, 288, 281, 306, 0, 220, 40, 83, 6, 82, 220, 17, 15, 17, 19, 11, 262, 88, 6, 271,
        260, 68, 68, 13,
    ],
    "你好，世界！今天天气很好。": [
        316, 284, 286, 264, 244, 163, 243, 234, 276, 223, 265, 232, 322, 322, 162, 108, 242, 319, 230, 284, 274,
    ],
    "Smile 😀<|endofprompt|>[breath]wow<strong>yes</strong>": [
        50, 76, 72, 75, 68, 220, 172, 253, 246, 222, 342, 343, 86, 292, 344, 88, 280, 345,
    ],
    "tabs\tand  spaces\r\n\nend ": [83, 64, 65, 82, 197, 64, 272, 220, 336, 64, 66, 280, 201, 198, 198, 68, 272, 220],
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return write_demo_tokenizer(tmp_path_factory.mktemp("demo"), DEMO_VOCAB_SIZE)


@pytest.fixture(scope="module")
def tokenizer(demo_dir: Path) -> TextTokenizer:
    return TextTokenizer.from_dir(demo_dir)


@pytest.mark.parametrize("text", list(HF_REFERENCE_IDS))
def test_ids_match_transformers_qwen2(tokenizer: TextTokenizer, text: str) -> None:
    assert tokenizer.encode(text) == HF_REFERENCE_IDS[text]


def test_special_tokens_follow_the_vocabulary_in_upstream_order(tokenizer: TextTokenizer, demo_dir: Path) -> None:
    n_bpe = len(json.loads((demo_dir / "vocab.json").read_text("utf-8")))
    assert [tokenizer.token_id(t) for t in COSYVOICE2_SPECIAL_TOKENS] == list(
        range(n_bpe, n_bpe + len(COSYVOICE2_SPECIAL_TOKENS))
    )
    assert tokenizer.vocab_size == n_bpe + len(COSYVOICE2_SPECIAL_TOKENS) <= DEMO_VOCAB_SIZE
    # With the real Qwen2 files (151643 BPE tokens) this is upstream's <|endofprompt|> = 151646.
    assert tokenizer.token_id("<|endofprompt|>") - tokenizer.token_id("<|endoftext|>") == 3


def test_any_text_round_trips_below_the_vocab_size(tokenizer: TextTokenizer) -> None:
    text = "Ünïcödé e\u0301 ℌ 表情😀🎉 \x00\x7f  \n\t [laughter] <|im_start|> ÿ" + bytes(range(128)).decode()
    ids = tokenizer.encode(text)
    assert max(ids) < DEMO_VOCAB_SIZE
    assert tokenizer.decode(ids, skip_special_tokens=False) == unicodedata.normalize("NFC", text)
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text).replace("[laughter]", "").replace(
        "<|im_start|>", ""
    )


def test_demo_tokenizer_is_deterministic_and_sized(tmp_path: Path, demo_dir: Path) -> None:
    again = write_demo_tokenizer(tmp_path / "again", DEMO_VOCAB_SIZE)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (again / name).read_bytes() == (demo_dir / name).read_bytes()
    small = TextTokenizer.from_dir(write_demo_tokenizer(tmp_path / "small", 300))
    assert small.vocab_size <= 300 and max(small.encode("你好 world 😀")) < 300
    with pytest.raises(ValueError, match="too small"):
        write_demo_tokenizer(tmp_path / "tiny", 200)


def test_tokenizer_json_gives_the_same_ids(tmp_path: Path, demo_dir: Path, tokenizer: TextTokenizer) -> None:
    _build_from_vocab(demo_dir).save(str(tmp_path / "tokenizer.json"))
    from_json = TextTokenizer.from_dir(tmp_path)  # no vocab.json/merges.txt there
    for text in HF_REFERENCE_IDS:
        assert from_json.encode(text) == tokenizer.encode(text)
    assert from_json.token_id("[mn]") == tokenizer.token_id("[mn]")


def test_missing_files_are_named(tmp_path: Path, demo_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        TextTokenizer.from_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} has no vocab.json"):
        TextTokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_bytes((demo_dir / "vocab.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="has no merges.txt"):
        TextTokenizer.from_dir(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nnot-in-vocab x\n", "utf-8")
    with pytest.raises(ValueError, match=rf"cannot load the tokenizer in {tmp_path}"):
        TextTokenizer.from_dir(tmp_path)


def test_added_token_ids_must_follow_the_vocabulary(tmp_path: Path, demo_dir: Path) -> None:
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((demo_dir / name).read_bytes())
    config = json.loads((demo_dir / "tokenizer_config.json").read_text("utf-8"))
    config["added_tokens_decoder"] = {"5000": {"content": "<|endoftext|>"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), "utf-8")
    with pytest.raises(ValueError, match="declared as id 5000"):
        TextTokenizer.from_dir(tmp_path)
