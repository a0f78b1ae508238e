"""The HTTP API: FastAPI on uvicorn, one process per HTTP worker (`worker.main`).

Read `worker.py` (process entry), `app.py` (assembly), `routes/` (one module per API family),
then `synthesis.py` + `responses.py` (a request from arrival to its last audio byte) and
`bridge.py` (the zmq side of the pipeline).
"""
