"""The supervisor behind `a10tts serve`: children, systemd notifications, watchdog, admin socket.

Only this package talks to systemd. Read `supervisor.py` first: it owns the lifecycle (start,
reload, drain, stop) and uses `pool.py` (the child processes), `restarts.py` (crash backoff),
`sd_notify.py` + `watchdog.py` (systemd), `status.py` (the `/v1/status` document), `warmup.py`
(the request that gates READY=1), `admin.py` (the admin socket), `options.py` (what to serve)
and `runtime.py` (the runtime directory and the HTTP listener).
"""
