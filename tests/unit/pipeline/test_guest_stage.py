"""A stage hosted on a thread of another stage's process (decode.in_llm_process), in a real process:
SIGTERM reaches only the host's main thread and must stop both loops; a bug in the guest's loop
must end the whole process, so that the supervisor restarts host and guest together."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from a10tts.config import Config
from a10tts.daemon.pool import place_guests, stage_counts
from a10tts.pipeline.spec import StageSpec

HOST_AND_GUEST = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    import torch
    from a10tts.config import Config
    from a10tts.pipeline.internal import DECODE_INBOX, LLM_INBOX
    from a10tts.pipeline.spec import StageSpec
    from a10tts.pipeline.stage import GuestThread, Stage

    logging.basicConfig(level=logging.INFO)
    ipc = Path(sys.argv[1])
    def spec(stage):
        return StageSpec(stage, 0, Config(), ipc, ipc, ipc, ipc)
    host = Stage(spec("llm"), spec("llm").endpoints.llm, LLM_INBOX)
    guest_stage = Stage(spec("decode"), spec("decode").endpoints.decode(0), DECODE_INBOX, host=host)

    def guest_loop():
        if sys.argv[2] == "fail":
            raise RuntimeError("a bug in the guest's loop")
        while not guest_stage.stopping:
            guest_stage.wait(5.0)
        print("guest stopped", flush=True)

    def load_guest():
        if sys.argv[2] == "load-fails":
            raise MemoryError("no room for the flow")
        return guest_loop

    guest = GuestThread(guest_stage, load_guest, torch.device("cpu"))
    guest.wait_loaded()
    guest.serve()
    print("serving", flush=True)
    while not host.stopping:
        host.wait(5.0)
    guest.stop()
    host.close()
    print("host stopped", flush=True)
""")


def run_host(tmp_path: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOST_AND_GUEST, str(tmp_path), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_stops_the_host_and_its_guest(tmp_path: Path) -> None:
    process = run_host(tmp_path, "serve")
    assert process.stdout.readline().strip() == "serving"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.splitlines() == ["guest stopped", "host stopped"]
    assert time.monotonic() - started < 4  # woken, not left to the 5 s waits


def test_an_exception_in_the_guest_ends_the_whole_process(tmp_path: Path) -> None:
    process = run_host(tmp_path, "fail")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "decode-0 failed; its process exits so that the supervisor restarts it" in err
    assert "RuntimeError: a bug in the guest's loop" in err
    assert "host stopped" not in out


def test_a_guest_that_cannot_load_fails_its_host(tmp_path: Path) -> None:
    process = run_host(tmp_path, "load-fails")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "serving" not in out
    assert "RuntimeError: decode-0 did not load: no room for the flow" in err


def specs(config: Config) -> list[StageSpec]:
    path = Path("unused")
    return [StageSpec(stage, index, config, path, path, path, path)
            for stage, count in stage_counts(config).items() for index in range(count)]


@pytest.mark.parametrize("decoders", [1, 2])
def test_the_first_decode_worker_rides_in_the_llm_process(decoders: int) -> None:
    config = Config.model_validate({"decode": {"processes": decoders, "in_llm_process": True}})
    placed = {spec.name: spec for spec in place_guests(specs(config), config)}
    assert sorted(placed) == sorted(["api-0", "api-1", "encode-0", "llm-0"] + [f"decode-{i}" for i in range(1, decoders)])
    assert [guest.name for guest in placed["llm-0"].guests] == ["decode-0"]
    assert all(not spec.guests for name, spec in placed.items() if name != "llm-0")


def test_without_in_llm_process_every_stage_has_its_own_process() -> None:
    config = Config()
    assert place_guests(specs(config), config) == specs(config)
