"""The edge client runtime: EdgeClient (user API), registration, connection, poll loop and task execution."""

from scaleout.client.edge_client import EdgeClient
from scaleout.client.tasks import StoppedException, TaskContext

__all__ = ["EdgeClient", "StoppedException", "TaskContext"]
