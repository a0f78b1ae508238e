"""`a10tts bench`: an HTTP load generator for a10tts and LightTTS-compatible servers."""
