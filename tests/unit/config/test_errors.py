"""Every class of configuration error is reported with file, line, key, expected and found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from a10tts.config import ConfigError, Dirs, load_config


def problems(config_dir: Path, state_dir: Path, **kwargs) -> list:
    with pytest.raises(ConfigError) as info:
        load_config(Dirs.resolve(config_dir, state_dir, env={}), env=kwargs.pop("env", {}), **kwargs)
    return info.value.problems


def write_conf(config_dir: Path, name: str, text: str | bytes) -> Path:
    (config_dir / "conf.d").mkdir(exist_ok=True)
    path = config_dir / "conf.d" / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_toml_syntax_error_names_file_and_line(config_dir: Path, state_dir: Path) -> None:
    path = write_conf(config_dir, "10.toml", "[server]\nport = 8081\nhost = 127.0.0.1\n")
    [p] = problems(config_dir, state_dir)
    assert (p.source, p.line) == (str(path), 3)
    assert "TOML syntax error" in p.message


def test_unknown_key_suggests_the_right_one(config_dir: Path, state_dir: Path) -> None:
    path = write_conf(config_dir, "10.toml", "[llm]\n\nmax_runing_requests = 4\n")
    [p] = problems(config_dir, state_dir)
    assert (p.source, p.line, p.key, p.message) == (str(path), 3, "llm.max_runing_requests", "unknown key")
    assert p.hint == "did you mean 'llm.max_running_requests'?"


def test_unknown_section_lists_valid_keys(config_dir: Path, state_dir: Path) -> None:
    write_conf(config_dir, "10.toml", "[serverr]\nport = 1\n")
    [p] = problems(config_dir, state_dir)
    assert p.key == "serverr" and p.line == 1
    assert p.hint == "did you mean 'server'?"


def test_wrong_type_and_out_of_range(config_dir: Path, state_dir: Path) -> None:
    path = write_conf(config_dir, "10.toml", '[server]\nport = 70000\nhttp_workers = "two"\n[llm]\nkv_cache_tokens = "lots"\n')
    found = {p.key: p for p in problems(config_dir, state_dir)}
    assert set(found) == {"server.port", "server.http_workers", "llm.kv_cache_tokens"}
    port = found["server.port"]
    assert (port.source, port.line, port.found) == (str(path), 2, "70000")
    assert "less than or equal to 65535" in port.expected
    workers = found["server.http_workers"]
    assert (workers.line, workers.found) == (3, '"two"') and "integer" in workers.expected
    kv = found["llm.kv_cache_tokens"]
    assert kv.line == 5 and "integer" in kv.expected and "'auto'" in kv.expected


def test_decode_batch_keys_are_checked(config_dir: Path, state_dir: Path) -> None:
    write_conf(config_dir, "10.toml", '[decode]\nmax_batch_tokens = -1\nyield_to_first_chunks = "maybe"\n')
    found = {p.key: p for p in problems(config_dir, state_dir)}
    assert set(found) == {"decode.max_batch_tokens", "decode.yield_to_first_chunks"}
    assert found["decode.max_batch_tokens"].found == "-1"
    assert "greater than or equal to 0" in found["decode.max_batch_tokens"].expected
    assert "bool" in found["decode.yield_to_first_chunks"].expected


def test_switches_take_only_toml_booleans(config_dir: Path, state_dir: Path) -> None:
    """A quoted word is a mistake even where pydantic's lax mode would read it as a boolean:
    "yes", "off" and 1 are refused, naming the key, so a typo never flips a switch silently."""
    write_conf(config_dir, "10.toml", '[llm]\ncuda_graphs = "yes"\n[decode]\ntorch_compile = "off"\n'
               '[logging]\naccess_log = 1\n')
    found = {p.key: p for p in problems(config_dir, state_dir)}
    assert set(found) == {"llm.cuda_graphs", "decode.torch_compile", "logging.access_log"}
    assert all("boolean" in problem.expected for problem in found.values())
    assert found["llm.cuda_graphs"].found == '"yes"' and found["logging.access_log"].found == "1"


def test_bad_enum_value(config_dir: Path, state_dir: Path) -> None:
    write_conf(config_dir, "10.toml", '[precision]\nllm = "int4"\n')
    [p] = problems(config_dir, state_dir)
    assert p.key == "precision.llm" and p.found == '"int4"'
    assert "'bfloat16'" in p.expected and "'float32'" in p.expected


def test_missing_profile_lists_available_ones(config_dir: Path, state_dir: Path) -> None:
    (state_dir / "active-profile").write_text("turbo\n")
    [p] = problems(config_dir, state_dir)
    assert (p.source, p.line, p.key) == (str(state_dir / "active-profile"), 1, "profile")
    assert "profile 'turbo' does not exist" in p.message
    assert p.hint == "available: balanced, low-latency, throughput"


def test_profile_may_not_choose_a_profile(config_dir: Path, state_dir: Path) -> None:
    path = config_dir / "profiles" / "balanced.toml"
    path.write_text('profile = "throughput"\n' + path.read_text())
    [p] = problems(config_dir, state_dir)
    assert p.key == "profile" and "inside a profile" in p.message


def test_unreadable_and_non_utf8_files(config_dir: Path, state_dir: Path) -> None:
    (config_dir / "conf.d").mkdir()
    (config_dir / "conf.d" / "dir.toml").mkdir()  # a directory cannot be read as a file
    write_conf(config_dir, "latin1.toml", b"# caf\xe9\n")
    messages = {Path(p.source).name: p.message for p in problems(config_dir, state_dir)}
    assert messages["dir.toml"].startswith("cannot read file")
    assert messages["latin1.toml"].startswith("not UTF-8 text")


def test_all_problems_are_reported_at_once(config_dir: Path, state_dir: Path) -> None:
    write_conf(config_dir, "10.toml", "[server]\nport = -1\n")
    write_conf(config_dir, "20.toml", "[server\n")
    (config_dir / "profiles" / "balanced.toml").write_text("[decode]\nprocesses = 0\n")
    found = problems(config_dir, state_dir, env={"A10TTS_LLM__CUDA_GRAPHS": "maybe"})
    keys = sorted((Path(p.source).name, p.key) for p in found)
    assert keys == [("10.toml", "server.port"), ("20.toml", ""), ("balanced.toml", "decode.processes"),
                    ("environment", "llm.cuda_graphs")]


def test_a_broken_value_is_reported_even_when_a_later_layer_overrides_it(config_dir: Path, state_dir: Path) -> None:
    write_conf(config_dir, "10.toml", "[server]\nport = 0\n")
    [p] = problems(config_dir, state_dir, overrides=["server.port=8081"])
    assert p.key == "server.port" and p.source.endswith("10.toml")


def test_missing_config_dir(tmp_path: Path, state_dir: Path) -> None:
    [p] = problems(tmp_path / "nope", state_dir)
    assert "does not exist" in p.message


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "a10tts.cli", *args], capture_output=True, text=True)


def test_cli_validate_exit_codes(config_dir: Path, state_dir: Path) -> None:
    ok = run_cli("config", "validate", "--config-dir", str(config_dir), "--state-dir", str(state_dir))
    assert ok.returncode == 0, ok.stderr
    write_conf(config_dir, "10.toml", "[server]\nprot = 1\nport = 'x'\n")
    bad = run_cli("config", "validate", "--config-dir", str(config_dir), "--state-dir", str(state_dir))
    assert bad.returncode == 2
    assert "10.toml:2: server.prot: unknown key" in bad.stderr
    assert "10.toml:3: server.port: invalid value" in bad.stderr
    assert "invalid configuration (2 problems)" in bad.stderr
