"""Ray backend of `scaleout simulate`: each host of virtual clients is a Ray actor.

Ray is an optional extra (`pip install 'scaleout-edge-open[ray]'`). With no address Ray starts a local
cluster in this process; with `--ray-address` the actors are spread over an existing cluster, whose
nodes need this package and the project folder at the same path, and must reach the server's ports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scaleout.simulation.host import HostSpec, VirtualClientHost

logger = logging.getLogger(__name__)

INSTALL_HINT = "the Ray backend needs Ray: pip install 'scaleout-edge-open[ray]' (or pip install ray)"


class _HostActor:
    """Runs one VirtualClientHost inside a Ray worker process (wrapped with ray.remote at start)."""

    def __init__(self, spec: HostSpec) -> None:
        logging.basicConfig(level=logging.INFO)
        self.host = VirtualClientHost(spec)

    def start(self) -> int:
        return self.host.start()

    def stop(self) -> None:
        self.host.stop()


class RayBackend:
    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.actors: list[Any] = []
        self.starts: list[Any] = []
        self._ray: Any = None
        self._initialised_here = False

    def _import_ray(self) -> Any:
        if self._ray is None:
            try:
                import ray
            except ImportError as exc:
                from scaleout.simulation.runner import SimulationError

                raise SimulationError(INSTALL_HINT) from exc
            self._ray = ray
        return self._ray

    def cpus(self) -> int:
        """CPUs the cluster offers: how many hosts fit at one CPU each."""
        ray = self._connect()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _connect(self) -> Any:
        ray = self._import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            self._initialised_here = True
        return ray

    def start(self, specs: list[HostSpec], logs: Path) -> None:
        ray = self._connect()
        actor_class = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_HostActor)
        self.actors = [actor_class.remote(spec) for spec in specs]
        self.starts = [actor.start.remote() for actor in self.actors]
        logger.info("%d Ray actors started; their logs are in Ray's session folder", len(self.actors))

    def failed(self) -> str | None:
        if not self.starts:
            return None
        ray = self._ray
        done, _ = ray.wait(self.starts, num_returns=len(self.starts), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
            except Exception as exc:  # the actor's exception, re-raised by Ray with its traceback
                return f"a Ray host of virtual clients failed: {exc}"
        return None

    def stop(self) -> None:
        ray = self._ray
        if ray is None:
            return
        if self.actors:
            try:
                ray.get([actor.stop.remote() for actor in self.actors], timeout=60)
            except Exception as exc:
                logger.warning("stopping the Ray hosts: %s", exc)
            for actor in self.actors:
                ray.kill(actor)
        self.actors, self.starts = [], []
        if self._initialised_here:
            ray.shutdown()
            self._initialised_here = False
