"""Layering, provenance, environment and command-line overrides, shipped files."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from a10tts.config import Config, ConfigError, Dirs, load_config
from a10tts.config.loader import flatten

SHIPPED_CONFIG = Path(__file__).resolve().parents[3] / "etc" / "a10tts"


def dirs(config_dir: Path, state_dir: Path) -> Dirs:
    return Dirs.resolve(config_dir, state_dir, env={})


def test_shipped_main_file_lists_every_key_with_its_default() -> None:
    shipped = flatten(tomllib.loads((SHIPPED_CONFIG / "a10tts.toml").read_text()))
    defaults = flatten(Config().model_dump(mode="json"))
    assert shipped == defaults


def test_every_key_in_the_shipped_file_is_explained_by_a_comment() -> None:
    lines = (SHIPPED_CONFIG / "a10tts.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), f"line {i + 1} has no comment: {line}"


@pytest.mark.parametrize("name", ["low-latency", "balanced", "throughput"])
def test_shipped_profiles_are_valid(config_dir: Path, state_dir: Path, name: str) -> None:
    loaded = load_config(dirs(config_dir, state_dir), env={}, profile=name)
    assert loaded.profile == name


def test_profiles_carry_the_a10_guide_modes(config_dir: Path, state_dir: Path) -> None:
    d = dirs(config_dir, state_dir)
    modes = {n: load_config(d, env={}, profile=n).config for n in ("low-latency", "balanced", "throughput")}
    shape = {n: (c.server.http_workers, c.decode.processes, c.decode.max_batch_size, c.precision.llm)
             for n, c in modes.items()}
    assert shape == {  # one decode process each: more time-slice the GPU (docs/benchmarks.md)
        "low-latency": (1, 1, 4, "float16"),
        "balanced": (2, 1, 16, "bfloat16"),
        "throughput": (3, 1, 32, "bfloat16"),
    }
    limits = [modes[n].memory.gpu_memory_limit_gib for n in ("low-latency", "balanced", "throughput")]
    assert limits == [8.0, 16.0, 22.0]
    assert modes["throughput"].llm.max_running_requests > modes["balanced"].llm.max_running_requests
    # balanced is the default: the schema defaults are its values
    assert modes["balanced"] == Config(profile="balanced")


def test_layers_later_wins_with_deep_merge(config_dir: Path, state_dir: Path) -> None:
    (config_dir / "conf.d").mkdir()
    (config_dir / "conf.d" / "10-port.toml").write_text("[server]\nport = 9000\nhost = '127.0.0.1'\n")
    (config_dir / "conf.d" / "20-port.toml").write_text("[server]\nport = 9001\n")
    loaded = load_config(dirs(config_dir, state_dir), env={})
    assert loaded.config.server.port == 9001  # lexical order: 20 after 10
    assert loaded.config.server.host == "127.0.0.1"  # deep merge keeps the sibling key
    assert loaded.provenance["server.port"] == f"{config_dir / 'conf.d' / '20-port.toml'}:2"
    assert loaded.provenance["server.host"] == f"{config_dir / 'conf.d' / '10-port.toml'}:3"


def test_profile_beats_files_and_environment_beats_profile(config_dir: Path, state_dir: Path) -> None:
    (config_dir / "conf.d").mkdir()
    (config_dir / "conf.d" / "workers.toml").write_text("[server]\nhttp_workers = 7\n")
    d = dirs(config_dir, state_dir)
    loaded = load_config(d, env={}, profile="throughput")
    assert loaded.config.server.http_workers == 3
    assert loaded.provenance["server.http_workers"].startswith(str(config_dir / "profiles" / "throughput.toml"))
    env = {"A10TTS_SERVER__HTTP_WORKERS": "5"}
    loaded = load_config(d, env=env, profile="throughput")
    assert loaded.config.server.http_workers == 5
    assert loaded.provenance["server.http_workers"] == "environment A10TTS_SERVER__HTTP_WORKERS"
    loaded = load_config(d, env=env, overrides=["server.http_workers=4"], profile="throughput")
    assert loaded.config.server.http_workers == 4
    assert loaded.provenance["server.http_workers"] == "command line --set server.http_workers=4"


def test_environment_values_are_typed(config_dir: Path, state_dir: Path) -> None:
    env = {"A10TTS_LLM__KV_CACHE_TOKENS": "12000", "A10TTS_LLM__CUDA_GRAPHS": "false",
           "A10TTS_MODEL__DIR": "/models/cv2", "A10TTS_STATE_DIR": "/ignored/by/schema"}
    config = load_config(dirs(config_dir, state_dir), env=env).config
    assert config.llm.kv_cache_tokens == 12000
    assert config.llm.cuda_graphs is False
    assert str(config.model.dir) == "/models/cv2"


def test_active_profile_comes_from_the_state_dir(config_dir: Path, state_dir: Path) -> None:
    (state_dir / "active-profile").write_text("low-latency\n")
    loaded = load_config(dirs(config_dir, state_dir), env={})
    assert loaded.profile == "low-latency"
    assert loaded.config.decode.processes == 1
    assert loaded.provenance["profile"] == f"{state_dir / 'active-profile'}:1"


def test_directories_follow_systemd_variables() -> None:
    env = {"CONFIGURATION_DIRECTORY": "/etc/x:/etc/y", "STATE_DIRECTORY": "/var/lib/x",
           "RUNTIME_DIRECTORY": "/run/x", "CACHE_DIRECTORY": "/var/cache/x"}
    d = Dirs.resolve(env=env)
    assert (d.config, d.state, d.runtime, d.cache) == tuple(map(Path, ("/etc/x", "/var/lib/x", "/run/x", "/var/cache/x")))
    ours = Dirs.resolve(env={**env, "A10TTS_CONFIG_DIR": "/tmp/c", "A10TTS_STATE_DIR": "/tmp/s"})
    assert (ours.config, ours.state) == (Path("/tmp/c"), Path("/tmp/s"))
    assert Dirs.resolve("/cli", env={**env, "A10TTS_CONFIG_DIR": "/tmp/c"}).config == Path("/cli")
    assert Dirs.resolve(env={}).config == Path("/etc/a10tts")


def test_config_package_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, a10tts.config, a10tts.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_invalid_override_is_reported(config_dir: Path, state_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(dirs(config_dir, state_dir), env={"A10TTS_SERVER__PORT": "zero"}, overrides=["oops"])
    text = str(info.value)
    assert "environment: server.port: invalid value" in text
    assert "--set 'oops' is not KEY=VALUE" in text


def test_a_negative_flow_prefix_budget_is_refused(config_dir: Path, state_dir: Path) -> None:
    d = dirs(config_dir, state_dir)
    assert load_config(d, env={}, overrides=["decode.flow_prefix_cache_mib=0"]).config.decode.flow_prefix_cache_mib == 0
    with pytest.raises(ConfigError) as info:
        load_config(d, env={}, overrides=["decode.flow_prefix_cache_mib=-1"])
    assert [p.key for p in info.value.problems] == ["decode.flow_prefix_cache_mib"]
    assert "greater than or equal to 0" in str(info.value)


def test_in_llm_process_takes_a_boolean_only(config_dir: Path, state_dir: Path) -> None:
    d = dirs(config_dir, state_dir)
    assert load_config(d, env={"A10TTS_DECODE__IN_LLM_PROCESS": "true"}).config.decode.in_llm_process is True
    with pytest.raises(ConfigError) as info:
        load_config(d, env={}, overrides=["decode.in_llm_process=sometimes"])
    assert [p.key for p in info.value.problems] == ["decode.in_llm_process"]
    assert "boolean" in str(info.value)


@pytest.mark.parametrize(("key", "bad", "why"), [
    ("llm.stream_buffer_seconds", "-0.5", "greater than or equal to 0"),
    ("llm.stream_buffer_seconds", "61", "less than or equal to 60"),
    ("llm.stream_first_chunk_hold_ms", "-1", "greater than or equal to 0"),
    ("llm.cuda_graph_max_prefill_tokens", "-64", "greater than or equal to 0"),
    ("llm.cuda_graph_max_prefill_tokens", "many", "valid integer"),
])
def test_the_lm_speed_keys_refuse_bad_values_by_name(config_dir: Path, state_dir: Path, key: str, bad: str,
                                                     why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(dirs(config_dir, state_dir), env={}, overrides=[f"{key}={bad}"])
    assert [p.key for p in info.value.problems] == [key]
    assert why in str(info.value)


def test_the_retired_stream_pace_key_is_named_unknown(config_dir: Path, state_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(dirs(config_dir, state_dir), env={}, overrides=["llm.stream_pace=4"])
    assert [p.key for p in info.value.problems] == ["llm.stream_pace"]
    assert "unknown key" in str(info.value) and "stream_buffer_seconds" in str(info.value)
