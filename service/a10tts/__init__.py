"""a10tts: a production CosyVoice2 text-to-speech service for NVIDIA GPU hosts."""

__version__ = "0.1.0"
