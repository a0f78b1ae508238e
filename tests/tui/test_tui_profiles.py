"""Profiles through a10tts.config: listing, differences, and switching with or without a service."""

from __future__ import annotations

from a10tts.admin_client import AdminClient
from a10tts.profile_switch import ProfileStore

from tui_fakes import RELOAD_OK, admin_server

BROKEN = "# Broken on purpose\n[server]\nhttp_workers = \"many\"\n"


def test_lists_profiles_with_descriptions_and_the_active_one(dirs):
    snapshot = ProfileStore(dirs).read()
    assert [p.name for p in snapshot.profiles] == ["balanced", "low-latency", "throughput"]
    assert snapshot.profiles[1].description.startswith("Low latency: 1 HTTP worker")
    assert snapshot.active == "balanced" and snapshot.config_error == ""


def test_a_broken_configuration_is_reported_with_the_recorded_profile(dirs):
    (dirs.profiles / "throughput.toml").write_text(BROKEN)
    dirs.active_profile_file.write_text("throughput\n")
    snapshot = ProfileStore(dirs).read()
    assert snapshot.active == "throughput"
    assert "server.http_workers" in snapshot.config_error and "throughput.toml" in snapshot.config_error


def test_differences_are_the_effective_settings_that_change(dirs):
    changes = {c.key: (c.old, c.new) for c in ProfileStore(dirs).differences("balanced", "low-latency")}
    assert changes["server.http_workers"] == (2, 1)
    assert changes["precision.llm"] == ("bfloat16", "float16")
    assert changes["profile"] == ("balanced", "low-latency")
    assert "server.port" not in changes


def test_switch_without_a_service_records_the_profile(dirs):
    steps = list(ProfileStore(dirs).switch("throughput", AdminClient(dirs.admin_socket)))
    assert [s.kind for s in steps] == ["recorded", "not_running"]
    assert {c.key for c in steps[0].changes} >= {"server.http_workers", "decode.max_batch_size"}
    assert "no a10tts service is running" in steps[-1].message
    assert dirs.active_profile_file.read_text() == "throughput\n"


def test_switch_to_an_invalid_profile_records_nothing(dirs):
    (dirs.profiles / "broken.toml").write_text(BROKEN)
    (step,) = ProfileStore(dirs).switch("broken", AdminClient(dirs.admin_socket))
    assert step.kind == "refused" and "server.http_workers" in step.message
    assert not dirs.active_profile_file.exists()


def test_switch_follows_the_reload_until_ready(dirs):
    with admin_server(dirs.admin_socket, RELOAD_OK) as seen:
        steps = list(ProfileStore(dirs).switch("low-latency", AdminClient(dirs.admin_socket)))
    assert seen == [{"cmd": "reload", "wait": True}]
    assert [(s.kind, s.message) for s in steps[1:]] == [
        ("progress", "validating the configuration"), ("progress", "draining running requests (2 in flight)"),
        ("progress", "restarting the workers"), ("progress", "ready (ready, profile low-latency, 0.0 req/s)"),
        ("ready", "the service runs profile 'low-latency'")]


def test_a_reload_that_changes_nothing_says_so(dirs):
    unchanged = [{"ok": True, "event": "validating"},
                 {"ok": True, "restarted": False, "profile": "balanced", "done": True}]
    with admin_server(dirs.admin_socket, unchanged):
        *_, last = ProfileStore(dirs).switch("balanced", AdminClient(dirs.admin_socket))
    assert (last.kind, last.message) == ("ready", "no setting changed; the service runs profile 'balanced'")


def test_a_refusal_by_the_service_restores_the_previous_choice(dirs):
    dirs.active_profile_file.write_text("low-latency\n")
    refusal = [{"ok": True, "event": "validating"},
               {"ok": False, "error": "decode.processes: needs 3 GPUs' memory", "done": True}]
    with admin_server(dirs.admin_socket, refusal):
        steps = list(ProfileStore(dirs).switch("throughput", AdminClient(dirs.admin_socket)))
    assert [s.kind for s in steps] == ["recorded", "progress", "refused"]
    assert "decode.processes: needs 3 GPUs' memory" in steps[-1].message
    assert "keeps running the previous configuration" in steps[-1].message
    assert dirs.active_profile_file.read_text() == "low-latency\n"


def test_a_refusal_with_no_earlier_choice_removes_the_record(dirs):
    refusal = [{"ok": False, "error": "cannot reload while loading", "done": True}]
    with admin_server(dirs.admin_socket, refusal):
        kinds = [s.kind for s in ProfileStore(dirs).switch("throughput", AdminClient(dirs.admin_socket))]
    assert kinds == ["recorded", "refused"]
    assert not dirs.active_profile_file.exists()
