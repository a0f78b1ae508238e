"""The shipped benchmark texts and voice prompts (prompts: espeak-ng recordings, 24 kHz)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

SENTENCES = {
    "en": (
        "The quarterly report shows steady growth in every region, and the team expects the trend to continue next year.",
        "Please remember to bring your passport and a printed copy of the booking confirmation to the airport.",
        "Scientists have discovered a new species of frog in the rainforest, living high in the canopy of ancient trees.",
        "If the weather stays clear tomorrow morning, we will hike to the summit and have lunch by the lake.",
        "Thank you for calling customer support. Your call is important to us, and an agent will be with you shortly.",
        "The museum's new exhibition explores how maps changed the way people imagined the world beyond their villages.",
    ),
    "zh": (
        "今天的会议主要讨论明年的预算安排，请各部门负责人提前准备好相关材料。",
        "欢迎收听今天的天气预报，明天白天晴转多云，最高气温二十六度，适合外出活动。",
        "这家餐厅的招牌菜是红烧肉和清蒸鱼，味道非常地道，吸引了很多外地游客。",
        "为了保护环境，我们应该减少使用一次性塑料制品，并且积极参与垃圾分类。",
        "图书馆将在下周一恢复正常开放时间，读者可以通过手机预约座位和借阅图书。",
        "随着人工智能技术的发展，语音合成的质量越来越接近真人的发音水平。",
    ),
}


@dataclass(frozen=True)
class Prompt:
    lang: str
    text: str
    wav: bytes


PROMPT_TEXTS = {
    "en": "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "zh": "今天天气很好，我们一起去公园散步吧。",
}


def prompts() -> dict[str, Prompt]:
    data = resources.files("a10tts.bench") / "data"
    return {lang: Prompt(lang, text, (data / f"prompt_{lang}.wav").read_bytes()) for lang, text in PROMPT_TEXTS.items()}
