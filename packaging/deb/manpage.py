"""Write a man page (roff, stdout) from a command's own argparse parser: `manpage.py a10tts 0.1.0-1`.

Run by build.py with the package's venv, so the page documents exactly the options of the
`--help` text it ships with. Both parsers import without torch.
"""

from __future__ import annotations

import argparse
import sys

SUMMARY = {
    "a10tts": "CosyVoice2 text-to-speech server for NVIDIA GPU hosts",
    "a10tts-tui": "terminal dashboard of an a10tts service",
}

FILES = """\
.TP
.I /etc/a10tts/a10tts.toml
the configuration; drop-ins in
.IR /etc/a10tts/conf.d/*.toml ,
tuning profiles in
.IR /etc/a10tts/profiles/*.toml .
.TP
.I /var/lib/a10tts
state: models (the default model directory is
.IR /var/lib/a10tts/models/CosyVoice2-0.5B ),
registered voices, the active profile.
.TP
.I /run/a10tts/admin.sock
the admin socket of the running service (group a10tts-admin).
"""

EXIT_STATUS = """\
.TP
0
success (\\fBserve\\fR: stopped cleanly).
.TP
1
failure (\\fBserve\\fR: could not start, or gave up on a worker).
.TP
2
invalid configuration; every problem is listed.
.TP
78
\\fBserve\\fR: no model directory; the message says where to put the model.
"""

SEE_ALSO = {
    "a10tts": "a10tts-tui(1), systemctl(1), journalctl(1); /usr/share/doc/a10tts/operations.md, "
              "configuration.md, api.md and packaging.md",
    "a10tts-tui": "a10tts(1); /usr/share/doc/a10tts/tui.md",
}


def roff(text: str) -> str:
    """Escape text for roff: backslashes and hyphens, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def parser_of(command: str) -> argparse.ArgumentParser:
    if command == "a10tts":
        from a10tts.cli import build_parser
        return build_parser()
    from a10tts_tui.options import parser
    return parser()


def option_lines(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    lines = []
    for action in parser._actions:
        if isinstance(action, (argparse._SubParsersAction, argparse._HelpAction)) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            takes = action.nargs != 0
            metavar = formatter._format_args(action, action.dest.upper()) if takes else ""
            term = ", ".join(f"\\fB{roff(o)}\\fR" + (f" \\fI{roff(metavar)}\\fR" if metavar else "")
                             for o in action.option_strings)
        else:
            term = f"\\fI{roff(formatter._format_args(action, action.dest))}\\fR"
        lines += [".TP", term, roff(formatter._expand_help(action) if action.help else "")]
    return lines


def subcommands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    """A subsection per subcommand, nested ones included, with its usage, summary and options."""
    lines = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        summaries = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            usage = " ".join(sub.format_usage().split())[len("usage: "):]
            lines += [f'.SS "{roff(prefix + " " + name)}"', f"\\fB{roff(usage)}\\fR", ".br",
                      roff(sub.description or summaries.get(name) or ""), *option_lines(sub)]
            lines += subcommands(sub, f"{prefix} {name}")
    return lines


def page(command: str, version: str) -> str:
    parser = parser_of(command)
    usage = " ".join(parser.format_usage().split())[len("usage: "):]
    lines = [
        f'.TH {command.upper()} 1 "" "{command} {version}" "User Commands"',
        ".SH NAME", f"{roff(command)} \\- {roff(SUMMARY[command])}",
        ".SH SYNOPSIS", f"\\fB{roff(usage)}\\fR",
        ".SH DESCRIPTION", roff(parser.description or ""),
        ".SH OPTIONS", *option_lines(parser),
    ]
    commands = subcommands(parser, command)
    if commands:
        lines += [".SH COMMANDS", f"Each command takes \\fB\\-\\-help\\fR too: \\fB{command} serve \\-\\-help\\fR.",
                  *commands]
    if command == "a10tts":
        lines += [".SH EXIT STATUS", EXIT_STATUS.rstrip("\n")]
    lines += [".SH FILES", FILES.rstrip("\n"), ".SH SEE ALSO", roff(SEE_ALSO[command])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(page(sys.argv[1], sys.argv[2]))
