"""Text normalisation (upstream's no-wetext path) and our English/Chinese number readers."""

from __future__ import annotations

import pytest

from a10tts.engine.text_normalize import (
    chinese_integer,
    english_integer,
    english_number,
    is_chinese,
    is_only_punctuation,
    normalize,
    normalize_prompt,
    read_numbers_zh,
    remove_blanks,
    split_paragraph,
)


def words(text: str) -> list[str]:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return text.split()


# inflect.engine().number_to_words(n), which upstream uses.
INFLECT_CARDINALS = {
    "0": "zero",
    "7": "seven",
    "21": "twenty-one",
    "100": "one hundred",
    "101": "one hundred and one",
    "999": "nine hundred and ninety-nine",
    "1001": "one thousand and one",
    "1100": "one thousand, one hundred",
    "100001": "one hundred thousand and one",
    "0123456": "one hundred and twenty-three thousand, four hundred and fifty-six",
    "1234567890": "one billion, two hundred and thirty-four million, five hundred and sixty-seven thousand, "
    "eight hundred and ninety",
    "123456789012345": "one hundred and twenty-three trillion, four hundred and fifty-six billion, seven hundred "
    "and eighty-nine million, twelve thousand, three hundred and forty-five",
}


@pytest.mark.parametrize(("digits", "expected"), INFLECT_CARDINALS.items())
def test_english_cardinals_match_inflect(digits: str, expected: str) -> None:
    assert english_integer(digits) == expected


def test_english_decimals_and_separators() -> None:
    assert english_number("0.987") == "zero point nine eight seven"
    assert english_number("1,000,000") == "one million"
    assert english_number("1,234.05") == "one thousand, two hundred and thirty-four point zero five"


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("0", "零"), ("10", "十"), ("15", "十五"), ("105", "一百零五"), ("1050", "一千零五十"),
        ("10050", "一万零五十"), ("15000", "一万五千"), ("100010", "十万零一十"), ("120000", "十二万"),
        ("100000001", "一亿零一"), ("101000000", "一亿零一百万"), ("007", "零零七"),
        ("13812345678", "一三八一二三四五六七八"),
    ],
)
def test_chinese_integers(digits: str, expected: str) -> None:
    assert chinese_integer(digits) == expected


def test_chinese_numbers_in_context() -> None:
    text = "2024年增长了3.5%，共1,234人，房间号0302。"
    assert read_numbers_zh(text) == "二零二四年增长了百分之三点五，共一千二百三十四人，房间号零三零二。"


def test_language_and_punctuation_checks() -> None:
    assert is_chinese("hello 世界") and not is_chinese("hello world, こんにちは")
    assert is_only_punctuation("") and is_only_punctuation("?!…“”$%")
    assert not is_only_punctuation("?a")


def test_remove_blanks_keeps_spaces_between_ascii_only() -> None:
    assert remove_blanks("你好 世界 hello world 你 好") == "你好世界hello world你好"
    assert remove_blanks(" a ") == "a"  # no neighbour on one side: dropped, never an IndexError


def test_chinese_normalisation() -> None:
    text = "你好 世界，今天（星期五）温度25.5度，湿度80%。\n面积10m²。【注意】他说：“走吧。”然后离开了，"
    assert normalize(text, words) == [
        "你好世界，今天星期五温度二十五点五度，湿度百分之八十。面积十m平方。注意他说：“走吧。”然后离开了。"
    ]
    assert normalize_prompt("希望你以后能够做得比我还好哟，") == "希望你以后能够做得比我还好哟。"


def test_english_normalisation() -> None:
    assert normalize("  I have 3 cats and 1,000 fish  ", words) == ["I have three cats and one thousand fish."]
    assert normalize_prompt("I have 2 cats, no split. Really.") == "I have two cats, no split. Really."


def test_markup_and_empty_text_pass_through() -> None:
    assert normalize("<|endofprompt|>Hello 123", words) == ["<|endofprompt|>Hello 123"]
    assert normalize("   ", words) == [] and normalize("...!!!", words) == []


def test_segments_pack_between_60_and_80_units() -> None:
    ten_words = "one two three four five six seven eight nine ten."
    assert [len(words(s)) for s in normalize(" ".join([ten_words] * 20), words)] == [80, 80, 40]
    # A tail under 20 units joins the previous segment, even past 80.
    assert [len(words(s)) for s in normalize(" ".join([ten_words] * 8 + ["tail end."]), words)] == [82]
    seventeen_chars = "今天天气很好我们一起去公园散步吧。"
    assert [len(s) for s in normalize(seventeen_chars * 12, words)] == [68, 68, 68]


def test_split_paragraph_sentence_ends() -> None:
    marks = frozenset(".?!;:")
    assert split_paragraph('He said "go." Then? Yes', len, marks, ".") == ['He said "go." Then? Yes.']
    sentences = split_paragraph("Really?! " + "word " * 100 + ". End.", lambda s: len(s.split()), marks, ".")
    assert sentences[0].startswith("Really?! ")  # "?!" is not split into an empty sentence
    assert split_paragraph('Done."', len, marks, ".") == ['Done."']  # no extra full stop after a quote
