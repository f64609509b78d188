"""`scaleout simulate`: many virtual clients of one project against a local server, for research.

The server is the real one (`scaleout server start` in a child process, SQLite + a local folder); the
virtual clients are real clients (registration, gRPC, the project's own callbacks), many per process,
each with its own share of the data (`client.partition`). Hosts of virtual clients run as local child
processes (host.py) or as Ray actors (ray_backend.py); runner.py drives a session from start to end.
"""
