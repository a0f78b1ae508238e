"""The `a10tts config` and `a10tts profile` commands, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def a10tts(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "a10tts.cli", *args], capture_output=True, text=True, env=env)


def dir_args(config_dir: Path, state_dir: Path) -> list[str]:
    return ["--config-dir", str(config_dir), "--state-dir", str(state_dir)]


def test_help_does_not_import_torch() -> None:
    code = ("import sys, runpy; sys.argv=['a10tts','--help']\n"
            "try: runpy.run_module('a10tts.cli', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_profile_use_then_show_provenance(config_dir: Path, state_dir: Path, tmp_path: Path) -> None:
    args = dir_args(config_dir, state_dir)
    used = a10tts("profile", "use", "throughput", *args, "--runtime-dir", str(tmp_path / "run"))
    assert used.returncode == 0, used.stderr
    assert "server.http_workers: 2 -> 3" in used.stdout
    assert "no a10tts service is running" in used.stdout
    assert (state_dir / "active-profile").read_text() == "throughput\n"
    shown = a10tts("config", "show", "--provenance", *args)
    throughput = str(config_dir / "profiles" / "throughput.toml")
    line = next(l for l in shown.stdout.splitlines() if l.startswith("server.http_workers"))
    assert line.startswith("server.http_workers = 3") and line.endswith(f"# {throughput}:5")
    listed = a10tts("profile", "list", *args).stdout.splitlines()
    assert [l[:2] for l in listed] == ["  ", "  ", "* "] and "throughput" in listed[2]


def test_profile_use_refuses_an_invalid_profile(config_dir: Path, state_dir: Path) -> None:
    (config_dir / "profiles" / "broken.toml").write_text("# Broken\n[decode]\nprocesses = 0\n")
    result = a10tts("profile", "use", "broken", *dir_args(config_dir, state_dir))
    assert result.returncode == 2
    assert "broken.toml:3: decode.processes: invalid value" in result.stderr
    assert not (state_dir / "active-profile").exists()
    missing = a10tts("profile", "use", "nope", *dir_args(config_dir, state_dir))
    assert missing.returncode == 2 and "profile 'nope' does not exist" in missing.stderr


def test_profile_show_prints_only_its_keys(config_dir: Path, state_dir: Path) -> None:
    out = a10tts("profile", "show", "low-latency", *dir_args(config_dir, state_dir)).stdout
    assert 'precision.llm = "float16"' in out and "server.port" not in out


def test_config_show_json_with_overrides(config_dir: Path, state_dir: Path) -> None:
    out = a10tts("config", "show", "--json", "--provenance", "--set", "server.port=9999",
                 *dir_args(config_dir, state_dir))
    data = json.loads(out.stdout)
    assert data["server.port"] == {"value": 9999, "source": "command line --set server.port=9999"}
    assert data["server.host"]["source"].endswith("a10tts.toml:31")
    plain = json.loads(a10tts("config", "show", "--json", *dir_args(config_dir, state_dir)).stdout)
    assert plain["llm"]["kv_cache_tokens"] == "auto"
