"""What `a10tts serve` was asked to run, and the configuration it resolves to (at start and reload)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..config import Dirs, LoadedConfig, load_config

log = logging.getLogger(__name__)

DEMO_MARKER = "A10TTS_DEMO_MODEL"  # a10tts.engine.model_dir.DEMO_MARKER (that module imports torch)
MISSING_MODEL_EXIT = 78  # EX_CONFIG: the unit's RestartPreventExitStatus= stops a restart loop


class ModelMissing(Exception):
    """No model directory where the configuration says; the message tells what to do."""

    exit_code = MISSING_MODEL_EXIT


def missing_model_message(model_dir: Path, source: str) -> str:
    return (
        f"no model directory at {model_dir} (model.dir, from {source})\n"
        f"  Put the official CosyVoice2-0.5B directory there (cosyvoice2.yaml, llm.pt, flow.pt, hift.pt,\n"
        f"  campplus.onnx, speech_tokenizer_v2.onnx, CosyVoice-BlankEN/), for example:\n"
        f"    huggingface-cli download FunAudioLLM/CosyVoice2-0.5B --local-dir {model_dir}\n"
        f"  or point model.dir at it in /etc/a10tts/a10tts.toml; check it with `a10tts model verify {model_dir}`,\n"
        f"  then start the service again.\n"
        f"  To try the service without the model, put the demo model there (random weights: its audio is noise)\n"
        f"  and start the service again:\n"
        f"    {_as_service_user()}a10tts model init-demo {model_dir}\n"
        f"  or run the built-in demo in the foreground: a10tts serve --demo"
    )


def _as_service_user() -> str:
    """Under systemd (which sets INVOCATION_ID) as a system user, the operator reading the journal is
    root: `runuser` makes the demo model as the service's user, which must be able to read it."""
    if not os.environ.get("INVOCATION_ID") or os.geteuid() == 0:
        return ""
    try:
        return f"runuser -u {pwd.getpwuid(os.geteuid()).pw_name} -- "
    except KeyError:  # no name for this ID (DynamicUser= that has already gone)
        return ""


def has_nvidia_gpu() -> bool:
    # Without importing torch (the supervisor never does): the driver lists its GPUs here.
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


@dataclass(frozen=True)
class ServeOptions:
    dirs: Dirs
    overrides: tuple[str, ...] = ()  # --set K=V and flags such as --port, in order
    demo: bool = False

    @property
    def demo_model_dir(self) -> Path:
        return self.dirs.state / "models" / "demo"

    def load(self, profile: str | None = None) -> LoadedConfig:
        """Load every layer (ConfigError lists all problems); --demo points model.dir at the demo.

        `profile` replaces the recorded active profile (a switch not yet recorded).
        """
        overrides = list(self.overrides)
        if self.demo:
            overrides.append(f"model.dir={json.dumps(str(self.demo_model_dir))}")
            if not has_nvidia_gpu():
                overrides.append('model.device="cpu"')
        loaded = load_config(self.dirs, overrides=overrides, profile=profile)
        self._ensure_demo_model()
        model_dir = loaded.config.model.dir
        if not model_dir.is_dir():
            raise ModelMissing(missing_model_message(model_dir, loaded.provenance["model.dir"]))
        return loaded

    def _ensure_demo_model(self) -> None:
        """Create the demo model on first use, in a child process: the supervisor never imports torch."""
        if not self.demo or self.demo_model_dir.is_dir():
            return
        log.info("creating the demo model in %s (random weights: its audio is noise)", self.demo_model_dir)
        self.demo_model_dir.parent.mkdir(parents=True, exist_ok=True)
        process = multiprocessing.get_context("spawn").Process(target=_init_demo, args=(self.demo_model_dir,))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"creating the demo model in {self.demo_model_dir} failed "
                               f"(exit status {process.exitcode})")


def _init_demo(path: Path) -> None:
    from ..engine.demo import init_demo

    # Build next to the target and rename, so a crash never leaves half a model behind.
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    init_demo(partial)
    partial.rename(path)


def is_demo_model(model_dir: Path) -> bool:
    return (model_dir / DEMO_MARKER).exists()
