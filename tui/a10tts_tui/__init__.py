"""a10tts-tui: the operator's dashboard for a10tts. Never imports torch."""
