"""CosyVoice2 text tokenizer: Qwen2 byte-level BPE plus CosyVoice2's special tokens.

The model directory's ``CosyVoice-BlankEN/`` holds a stock Qwen2 tokenizer. CosyVoice2 appends
its own special tokens to it at load time; their ids are whatever comes next after the
tokenizer's own vocabulary, so the order of ``COSYVOICE2_SPECIAL_TOKENS`` is part of the
checkpoint contract (e.g. ``<|endofprompt|>`` is 151646 with the real Qwen2 files).

Built with the ``tokenizers`` library only: ``tokenizer.json`` when present (as Hugging Face
prefers it), else ``vocab.json`` + ``merges.txt`` with the added tokens declared in
``tokenizer_config.json``, assembled exactly as Qwen2's fast tokenizer is.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

# Qwen2's pre-tokenisation pattern (contractions, letter runs, single digits, punctuation runs,
# newlines, whitespace); it decides where BPE merges may never cross.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Tokens the stock Qwen2 tokenizer already carries after its BPE vocabulary.
QWEN2_ADDED_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Upstream adds eos, pad, then its additional specials, in this order; tokens that already
# exist keep their id, new ones are numbered consecutively.
COSYVOICE2_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endofprompt|>",
    "[breath]",
    "<strong>",
    "</strong>",
    "[noise]",
    "[laughter]",
    "[cough]",
    "[clucking]",
    "[accent]",
    "[quick_breath]",
    "<laughter>",
    "</laughter>",
    "[hissing]",
    "[sigh]",
    "[vocalized-noise]",
    "[lipsmack]",
    "[mn]",
)

END_OF_PROMPT = "<|endofprompt|>"


def _special(content: str) -> AddedToken:
    return AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)


def _qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer directory {directory} has no {name}")
    return path


def _build_from_vocab(directory: Path) -> Tokenizer:
    vocab, merges = _require(directory, "vocab.json"), _require(directory, "merges.txt")
    bpe = models.BPE.from_file(
        str(vocab), str(merges), unk_token=None, fuse_unk=False, byte_fallback=False
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = _qwen2_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()

    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text("utf-8")) if config_path.is_file() else {}
    declared = config.get("added_tokens_decoder", {})
    for token_id, spec in sorted(declared.items(), key=lambda item: int(item[0])):
        content = spec["content"]
        tokenizer.add_special_tokens([_special(content)])
        if tokenizer.token_to_id(content) != int(token_id):
            raise ValueError(
                f"{config_path}: added token {content!r} is declared as id {token_id} but would get "
                f"id {tokenizer.token_to_id(content)}; added ids must follow the vocabulary without gaps"
            )
    return tokenizer


class TextTokenizer:
    """Text -> token ids for the CosyVoice2 LM (no BOS/EOS is ever added)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        tokenizer.add_special_tokens([_special(t) for t in COSYVOICE2_SPECIAL_TOKENS])
        self._tokenizer = tokenizer
        self._special_ids = frozenset(tokenizer.token_to_id(t) for t in COSYVOICE2_SPECIAL_TOKENS)

    @classmethod
    def from_dir(cls, directory: str | Path) -> TextTokenizer:
        """Load from a Qwen2 tokenizer directory such as ``<model>/CosyVoice-BlankEN``."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"tokenizer directory {directory} does not exist")
        tokenizer_json = directory / "tokenizer.json"
        try:
            if tokenizer_json.is_file():
                return cls(Tokenizer.from_file(str(tokenizer_json)))
            return cls(_build_from_vocab(directory))
        except FileNotFoundError:
            raise
        except Exception as exc:  # tokenizers reports unreadable files as a bare Exception
            raise ValueError(f"cannot load the tokenizer in {directory}: {exc}") from exc

    @property
    def vocab_size(self) -> int:
        """Number of ids in use, added tokens included (every id is below this)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return token_id

    def encode(self, text: str) -> list[int]:
        # Special-token strings in the text (e.g. "[breath]") map to their ids, like upstream's
        # allowed_special="all".
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        # tokenizers only skips tokens flagged special; filter ours explicitly so the result does
        # not depend on how a tokenizer.json flagged them.
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


# --- demo tokenizer ------------------------------------------------------------------------

# Fixed training text for the demo merges: common English and Chinese so both get real
# multi-byte tokens. Any text still encodes, because every byte is in the vocabulary.
_DEMO_CORPUS = """
Hello, world! This is a small text to speech demo. The quick brown fox jumps over the lazy dog.
We are testing the streaming service: it should speak clearly, quickly and naturally.
Please read the following sentence in a calm voice. Thank you for listening, and have a nice day.
What time is it now? It is ten o'clock in the morning, and the weather is sunny and warm.
There were 3 apples, 25 oranges and 1024 grapes on the table; they're all fresh.
你好，世界！这是一个语音合成的演示。今天天气很好，我们一起去公园散步吧。
收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐。
希望你以后能够做得比我还好哟。我们的服务支持流式输出，声音清晰自然。
"""


def _byte_symbols() -> list[str]:
    """The 256 byte-level symbols in GPT-2/Qwen2 vocabulary order: printable bytes stand for
    themselves and come first, the others become chr(256 + n) in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    n_others = 256 - len(printable)
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(n_others)]


def _learn_merges(corpus: str, max_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE on ``corpus``: repeatedly merge the most frequent adjacent pair (ties by text)."""
    pieces = Counter(piece for piece, _ in _qwen2_pre_tokenizer().pre_tokenize_str(corpus))
    words = {tuple(piece): count for piece, count in pieces.items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pair_counts: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        if pair_counts[best] < 2:
            break
        merges.append(best)
        words = {_apply_merge(symbols, best): count for symbols, count in words.items()}
    return merges


def _apply_merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def write_demo_tokenizer(directory: str | Path, vocab_size: int) -> Path:
    """Write a tiny deterministic Qwen2-style tokenizer whose every id (specials included) is
    below ``vocab_size``: vocab.json, merges.txt and tokenizer_config.json."""
    reserved = 256 + len(COSYVOICE2_SPECIAL_TOKENS)
    if vocab_size < reserved:
        raise ValueError(f"vocab_size {vocab_size} is too small: bytes and special tokens need {reserved}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    merges = _learn_merges(_DEMO_CORPUS, vocab_size - reserved)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    added = {
        str(len(vocab) + i): {"content": t, "lstrip": False, "rstrip": False, "normalized": False,
                              "single_word": False, "special": True}
        for i, t in enumerate(QWEN2_ADDED_TOKENS)
    }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 32768,
    }
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges), "utf-8"
    )
    (directory / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), "utf-8")
    return directory
