"""Text normalisation and sentence splitting for CosyVoice2 synthesis.

Follows upstream's frontend for the case where neither ttsfrd nor wetext is installed:
Chinese text gets blank/bracket/punctuation clean-up, English text gets its numbers spelled
out, and both are cut into sentences and packed into segments of about 60-80 units (characters
for Chinese, tokens for English). Where upstream would run wetext we read numbers ourselves
(English words in inflect's style, Chinese characters), and we keep decimals and
thousands separators together instead of reading each digit run separately.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

Tokenize = Callable[[str], Sequence[int]]

_CJK = re.compile(r"[\u4e00-\u9fff]")
# A number: thousands-separated or plain digits, with an optional decimal part.
_NUMBER_PATTERN = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_NUMBER = re.compile(_NUMBER_PATTERN)
_ZH_PERCENT = re.compile(rf"({_NUMBER_PATTERN})[%％]")
_ZH_YEAR = re.compile(r"(?<!\d)(\d{4})(?=年)")

# Segment packing, as upstream: segments grow to token_max_n units unless still below
# token_min_n; a tail shorter than merge_len joins the previous segment.
TOKEN_MAX_N, TOKEN_MIN_N, MERGE_LEN = 80, 60, 20
_ZH_SENTENCE_END = frozenset("。？！；：、.?!;")
_EN_SENTENCE_END = frozenset(".?!;:")
_CLOSING_QUOTES = frozenset('"”')


def is_chinese(text: str) -> bool:
    """True when the text contains a CJK unified ideograph (upstream's language switch)."""
    return _CJK.search(text) is not None


def _has_markup(text: str) -> bool:
    # Raw special tokens such as <|endofprompt|> mean the caller formatted the text itself.
    return "<|" in text and "|>" in text


def normalize_prompt(text: str) -> str:
    """Normalise a prompt transcript as one string (no sentence splitting)."""
    text = text.strip()
    if not text or _has_markup(text):
        return text
    return _normalize_chinese(text) if is_chinese(text) else spell_out_numbers(text)


def normalize(text: str, tokenize: Tokenize) -> list[str]:
    """Normalise ``text`` and split it into synthesis segments; [] when nothing is speakable."""
    text = text.strip()
    if _has_markup(text):
        return [text]
    if not text:
        return []
    if is_chinese(text):
        segments = split_paragraph(_normalize_chinese(text), len, _ZH_SENTENCE_END, "。")
    else:
        segments = split_paragraph(spell_out_numbers(text), lambda s: len(tokenize(s)), _EN_SENTENCE_END, ".")
    return [s for s in segments if not is_only_punctuation(s)]


def _normalize_chinese(text: str) -> str:
    text = read_numbers_zh(text)
    text = text.replace("\n", "")
    text = remove_blanks(text)
    text = text.replace("²", "平方").replace("³", "立方")
    text = text.replace(".", "。").replace(" - ", "，")
    for mark in ("（", "）", "【", "】", "`"):
        text = text.replace(mark, "")
    text = text.replace("——", " ")
    return re.sub(r"[，,、]+$", "。", text)


def remove_blanks(text: str) -> str:
    """Drop spaces except those between two non-space ASCII characters (e.g. English words)."""
    kept = []
    for i, char in enumerate(text):
        if char == " ":
            before = text[i - 1] if i > 0 else " "
            after = text[i + 1] if i + 1 < len(text) else " "
            if not (before.isascii() and before != " " and after.isascii() and after != " "):
                continue
        kept.append(char)
    return "".join(kept)


def is_only_punctuation(text: str) -> bool:
    """True for text made only of punctuation and symbols (or empty)."""
    return all(unicodedata.category(c)[0] in "PS" for c in text)


def split_paragraph(
    text: str, length: Callable[[str], int], sentence_end: frozenset[str], full_stop: str
) -> list[str]:
    """Cut ``text`` after sentence-ending marks, then pack sentences into segments."""
    if not text:
        return []
    if text.rstrip("".join(_CLOSING_QUOTES))[-1:] not in sentence_end:
        text += full_stop

    sentences: list[str] = []
    start = 0
    for i, char in enumerate(text):
        if char not in sentence_end:
            continue
        end = i + 1
        if end < len(text) and text[end] in _CLOSING_QUOTES:  # keep a closing quote with its sentence
            end += 1
        if i > start:
            sentences.append(text[start:end])
        elif sentences:  # a run of marks such as "?!" stays with its sentence
            sentences[-1] += text[start:end]
        start = end

    segments: list[str] = []
    current = ""
    for sentence in sentences:
        if length(current + sentence) > TOKEN_MAX_N and length(current) > TOKEN_MIN_N:
            segments.append(current)
            current = ""
        current += sentence
    if current:
        if segments and length(current) < MERGE_LEN:
            segments[-1] += current
        else:
            segments.append(current)
    return segments


# --- English numbers -------------------------------------------------------------------------

_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_SCALES = (
    "", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion",
    "sextillion", "septillion", "octillion", "nonillion", "decillion",
)


def _english_below_100(n: int) -> str:
    if n < 20:
        return _EN_ONES[n]
    tens, ones = divmod(n, 10)
    return _EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else "")


def _english_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _english_below_100(rest)
    return f"{_EN_ONES[hundreds]} hundred" + (f" and {_english_below_100(rest)}" if rest else "")


def english_integer(digits: str) -> str:
    """Cardinal words in inflect's style: 1990 -> 'one thousand, nine hundred and ninety'."""
    n = int(digits)
    if n == 0:
        return "zero"
    if n >= 1000 ** len(_EN_SCALES):
        return " ".join(_EN_ONES[int(d)] for d in digits)
    groups = []  # (value, scale) from the highest scale down
    for scale in _EN_SCALES:
        n, group = divmod(n, 1000)
        groups.append((group, scale))
    words = [f"{_english_below_1000(g)} {s}".rstrip() for g, s in reversed(groups) if g]
    # "one thousand and one": a last group below 100 joins with "and" rather than a comma.
    if len(words) > 1 and 0 < groups[0][0] < 100:
        return ", ".join(words[:-1]) + " and " + words[-1]
    return ", ".join(words)


def english_number(number: str) -> str:
    """Words for '1,234.05' style numbers: integer part as a cardinal, decimals digit by digit."""
    whole, _, fraction = number.replace(",", "").partition(".")
    words = english_integer(whole)
    if fraction:
        words += " point " + " ".join(_EN_ONES[int(d)] for d in fraction)
    return words


def spell_out_numbers(text: str) -> str:
    return _NUMBER.sub(lambda m: english_number(m.group()), text)


# --- Chinese numbers -------------------------------------------------------------------------

_ZH_DIGITS = "零一二三四五六七八九"
_ZH_SECTION_UNITS = ("", "万", "亿")
# Longer digit strings (phone numbers, ids) are read digit by digit.
_ZH_MAX_CARDINAL_DIGITS = 10


def _chinese_section(n: int) -> str:
    """Read 1..9999, with a single 零 for inner zeros (1005 -> 一千零五)."""
    out, pending_zero = [], False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit == 0:
            pending_zero = pending_zero or bool(out)
            continue
        if pending_zero:
            out.append("零")
            pending_zero = False
        out.append(_ZH_DIGITS[digit] + unit)
    return "".join(out)


def chinese_digits(digits: str) -> str:
    return "".join(_ZH_DIGITS[int(d)] for d in digits)


def chinese_integer(digits: str) -> str:
    """Cardinal reading: 100010 -> 十万零一十, 120000 -> 十二万; long or 0-led strings digit by digit."""
    if len(digits) > _ZH_MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits[0] == "0"):
        return chinese_digits(digits)
    n = int(digits)
    if n == 0:
        return "零"
    sections = [(n // 10000**i) % 10000 for i in range(len(_ZH_SECTION_UNITS))]
    out: list[str] = []
    gap = False  # an all-zero section or leading zeros separate this section from the previous
    for section, unit in reversed(list(zip(sections, _ZH_SECTION_UNITS))):
        if section == 0:
            gap = gap or bool(out)
            continue
        if out and (gap or section < 1000):
            out.append("零")
        out.append(_chinese_section(section) + unit)
        gap = False
    text = "".join(out)
    return text[1:] if text.startswith("一十") else text


def chinese_number(number: str) -> str:
    whole, _, fraction = number.replace(",", "").partition(".")
    words = chinese_integer(whole)
    return words + ("点" + chinese_digits(fraction) if fraction else "")


def read_numbers_zh(text: str) -> str:
    """Replace digits in Chinese text by their reading (percentages and years first)."""
    text = _ZH_PERCENT.sub(lambda m: "百分之" + chinese_number(m.group(1)), text)
    text = _ZH_YEAR.sub(lambda m: chinese_digits(m.group(1)), text)
    return _NUMBER.sub(lambda m: chinese_number(m.group()), text)
