"""One round's aggregation on the combiner's disk: the global model, each update as it arrives, the result.

Everything here is blocking file and numpy work for a worker thread. The global model is copied
from the repository into the work folder once, for the strategies that read it (server optimisers);
every update is read in place from the file the upload wrote. A streaming strategy folds an update
and the file is deleted at once; a strategy that needs all updates keeps their files (and nothing
else) until the result has been written. Peak memory is what the strategy itself holds (FedAvg and
the server optimisers: float64 sums, 2 x a float32 model, the optimisers' moments staying on disk;
the robust strategies: slices within a fixed budget) plus slices.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from scaleout_server.aggregation.base import Strategy
from scaleout_server.aggregation.params import ParamsView
from scaleout_server.aggregation.stored import StoredParams, open_copy, write_params

try:
    import fcntl
except ImportError:  # not on Windows: pipes keep their default size
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class AggregationJob:
    """Drive a strategy over stored files: `begin`, `fold` per update, `conclude`, then `close` (always)."""

    def __init__(self, strategy: Strategy, helper: Any, work_dir: str | Path) -> None:
        self.strategy = strategy
        self.helper = helper
        self.work_dir = Path(work_dir)
        self._global_file: Path | None = None
        self._global: StoredParams | None = None
        self._kept: list[tuple[StoredParams, Path | None]] = []  # non-streaming: views and files to delete
        self._lock = threading.Lock()  # close() may come from the loop while a worker thread still folds
        self._closed = False
        self.folded = 0

    def begin(self, global_model: BinaryIO | None, state: dict[str, Any] | None = None) -> None:
        """Restore the session's state and start the strategy from the global model's stream. Only a
        strategy that reads the global model (`uses_global_model`) gets it, copied to the work folder;
        the others (and every strategy when the stream is None) begin with None."""
        if state is not None:
            self.strategy.load_state_dict(state)
        view: ParamsView | None = None
        if global_model is not None and self.strategy.uses_global_model:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._global_file = self.work_dir / f".global-{uuid.uuid4().hex}.scm"
            self._global = view = open_copy(global_model, self._global_file, self.helper, self.work_dir)
        self.strategy.begin(view)

    def fold(self, path: str | Path, num_examples: float, metadata: dict[str, Any], *, delete: bool = True) -> None:
        """Give one stored update to the strategy; its file is deleted once no longer needed (`delete`),
        also when it cannot be aggregated."""
        path = Path(path)
        view: StoredParams | None = None
        kept = False
        try:
            view = StoredParams.open(path, self.helper, self.work_dir)
            self.strategy.accumulate(view, num_examples, metadata)
            self.folded += 1
            if not self.strategy.streaming:
                with self._lock:
                    if not self._closed:
                        self._kept.append((view, path if delete else None))
                        kept = True
        finally:
            if not kept:
                if view is not None:
                    view.close()
                if delete:
                    path.unlink(missing_ok=True)

    def conclude(self, out: BinaryIO) -> bool:
        """Write the strategy's result in the helper's format to `out`; False when there is none."""
        params = self.strategy.result() if self.folded else None
        if params is None:
            return False
        write_params(params, out, self.helper)
        return True

    @contextmanager
    def result_container(self, model_id: str, helper_type: str) -> Iterator[BinaryIO | None]:
        """The result as a readable stream of model-container bytes (None when there is no result),
        produced while it is read: the helper's bytes and the container around them are written by two
        threads through pipes, so no temporary copy of the model touches the disk and the numpy work,
        the checksums and the consumer (e.g. `repository.put`) run side by side. Read it to the end;
        if producing failed, leaving the block raises that error (the consumer must then discard what
        it stored)."""
        from scaleoututil.model import write_container

        params = self.strategy.result() if self.folded else None
        if params is None:
            yield None
            return
        with _produced(lambda out: write_params(params, out, self.helper)) as training:
            with _produced(lambda out: write_container(out, model_id, training, helper_type=helper_type)) as stream:
                yield stream

    def state_dict(self) -> dict[str, Any]:
        return self.strategy.state_dict()

    def close(self) -> None:
        """Delete the global copy and the kept updates (those the caller let us delete)."""
        with self._lock:
            self._closed = True
            kept, self._kept = self._kept, []
        for view, path in kept:
            view.close()
            if path is not None:
                path.unlink(missing_ok=True)
        if self._global is not None:
            self._global.close()
            self._global = None
        if self._global_file is not None:
            self._global_file.unlink(missing_ok=True)
            self._global_file = None


PIPE_SIZE = 1024 * 1024  # larger pipe buffers: fewer thread switches per model


@contextmanager
def _produced(write: Callable[[BinaryIO], None]) -> Iterator[BinaryIO]:
    """A readable stream of what `write(out)` writes, produced by a thread as the stream is read.

    Leaving the block closes the stream (a producer still writing then stops on a broken pipe), waits
    for the thread and raises what it raised, unless the block itself is already raising."""
    read_fd, write_fd = os.pipe()
    if fcntl is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
        try:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # the default size works, a little slower
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with open(write_fd, "wb") as out:
                write(out)
        except BaseException as exc:  # handed to the consumer's thread
            errors.append(exc)

    thread = threading.Thread(target=produce, name="aggregation-writer", daemon=True)
    reader = open(read_fd, "rb")  # noqa: SIM115 - closed below, after the consumer is done
    thread.start()
    failed = False
    try:
        yield reader
    except BaseException:
        failed = True
        raise
    finally:
        reader.close()
        thread.join()
        if errors and not failed and not isinstance(errors[0], BrokenPipeError):
            raise errors[0]
        if errors and not failed:
            raise ValueError("the aggregated model was not read to its end") from errors[0]

