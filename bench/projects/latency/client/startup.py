"""Benchmark project: a custom command that reports when its callback started."""

import time

from scaleout import EdgeClient


def startup(client: EdgeClient) -> None:
    client.set_custom_callback("stamp", lambda params: {"t_callback": time.time()})
