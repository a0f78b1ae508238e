"""A streaming HTTP client for the system tests, run inside the booted system's network namespace.

`--once`: one request, its outcome as JSON on stdout (`--started-file`: created once the response
has begun, so a test knows this very request is in flight). `--loop`: requests back to back until
`--stop-file` exists, one JSON line per request in `--out`. A 503 with Retry-After is a polite
"not now": the client waits and retries, as a well-behaved client does; anything else that is
not a complete 200 stream counts as a failure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx

from a10tts.daemon.warmup import prompt_wav

PROMPT = prompt_wav()


def stream_once(url: str, text: str, started_file: Path | None = None) -> dict:
    files = {"prompt_wav": ("prompt.wav", PROMPT, "audio/wav")}
    data = {"tts_text": text, "prompt_text": "a prompt", "stream": "true"}
    started = time.time()
    try:
        with httpx.stream("POST", f"{url}/inference_zero_shot", files=files, data=data, timeout=120) as response:
            if started_file is not None:
                started_file.touch()
            body = response.read()
            return {"status": response.status_code, "bytes": len(body), "start": started, "end": time.time(),
                    "retry_after": response.headers.get("retry-after"),
                    "body": body[:300].decode("utf-8", "replace") if response.status_code != 200 else ""}
    except httpx.HTTPError as exc:
        return {"status": None, "error": repr(exc), "start": started, "end": time.time()}


def stream_politely(url: str, text: str) -> dict:
    """Retry 503 + Retry-After; return the final outcome with the number of polite retries."""
    retries = 0
    while True:
        outcome = stream_once(url, text)
        if outcome["status"] == 503 and outcome["retry_after"]:
            retries += 1
            time.sleep(min(float(outcome["retry_after"]), 2.0))
            continue
        outcome["retries"] = retries
        return outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--text", default="Hello from the system test.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true")
    mode.add_argument("--loop", action="store_true")
    parser.add_argument("--stop-file", type=Path)
    parser.add_argument("--started-file", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.once:
        print(json.dumps(stream_once(args.url, args.text, args.started_file)))
        return
    with args.out.open("w") as out:
        while not args.stop_file.exists():
            out.write(json.dumps(stream_politely(args.url, args.text)) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
