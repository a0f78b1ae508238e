"""Subcommands of the `a10tts` CLI; each module has `register(subparsers)`."""
