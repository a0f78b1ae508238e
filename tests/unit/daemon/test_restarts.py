from a10tts.daemon.restarts import RestartPolicy


def test_backoff_grows_then_gives_up() -> None:
    policy = RestartPolicy(backoff_s=(0.5, 1.0, 2.0), window_s=100)
    slot = ("llm", 0)
    assert [policy.crashed(slot, now=t) for t in (0, 1, 2)] == [0.5, 1.0, 2.0]
    assert policy.crashed(slot, now=3) is None
    assert policy.crashed(("decode", 0), now=3) == 0.5  # slots are counted apart


def test_crashes_outside_the_window_are_forgotten() -> None:
    policy = RestartPolicy(backoff_s=(0.5, 1.0), window_s=10)
    policy.crashed(("api", 0), now=0)
    policy.crashed(("api", 0), now=1)
    assert policy.crashed(("api", 0), now=30) == 0.5 and policy.recent(("api", 0)) == 1
