"""Peak memory of aggregation: every strategy within 3 x one model's size, whatever the number of updates.

Each strategy is measured in a fresh process running the combiner's aggregation path (`Rounds._begin`:
the strategy's saved state loaded and the global model copied from a LocalRepository;
`AggregationJob.fold` per update, read in place; `Rounds._conclude`: the result streamed into the
repository and the state saved), which reports its peak RSS above what it held after its imports. The
peak is the kernel's high-water mark of the process's own memory (`VmHWM` in /proc/self/status):
`ru_maxrss` would not do, since Linux carries the parent's peak over into a child started with
fork/exec. Two rounds of one session run per strategy, each in its own process: 5 updates, then 20
that continue the first round's state, so server optimisers both start their moments afresh and read
saved ones back. Both peaks must stay within the bound, and the second must not be above the first by
more than a quarter of a model: the peak does not grow with the number of updates.

Updates are 16 MB float32 models, written once and copied: small, so the ten strategies take seconds.
The strategies' working buffers are fixed sizes (8 MB slices, 64 MB of stacked slices for the robust
ones), meant to be small next to a large model; the child scales them to this model as they are to
the benchmark's 200 MB one (`bench/aggregation.py`), else they alone would exceed the bound here.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from scaleout_server.aggregation.registry import available_strategies
from scaleout_server.repository.local import LocalRepository
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import write_container

ROOT = Path(__file__).resolve().parents[2]
PARAMS = 4_000_000  # float32: 16 MB per update
SIZE = PARAMS * 4
BENCH_SIZE = 200_000_000  # the benchmark's model, for which the buffers' sizes are chosen
MANY, FEW = 20, 5
BOUND = 3.0  # x one model's size (issue 14)

MEASURE = """
import json, sys
from pathlib import Path
from scaleout_server.aggregation import params, robust
from scaleout_server.aggregation.job import AggregationJob
from scaleout_server.aggregation.registry import make_strategy
from scaleout_server.combiner.rounds import Rounds
from scaleout_server.repository.local import LocalRepository
from scaleoututil.helpers.helpers import get_helper

work, name, count, scale = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
params.BLOCK_BYTES = int(params.BLOCK_BYTES * scale)
robust.STACK_BUDGET = int(robust.STACK_BUDGET * scale)

def high_water():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

helper = get_helper("numpyhelper")
repository = LocalRepository(work / "repo")
rounds = Rounds(None, repository, None, work / "work" / name, state_dir=work / "state" / name)
base = high_water()
job = AggregationJob(make_strategy(name, helper), helper, work / "work" / name)
rounds._begin(job, "session", "global")
for k in range(count):
    job.fold(work / f"update-{k}.scm", 1 + k, {}, delete=False)
model_id = rounds._conclude(job, "session", "numpyhelper", True)
job.close()
repository.delete("models", model_id)
print(json.dumps({"base": base, "peak": high_water()}))
"""


@pytest.fixture(scope="module")
def updates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A global model and 20 updates of 40 MB each on disk (800 MB; removed after the module)."""
    folder = tmp_path_factory.mktemp("memory")
    helper = get_helper("numpyhelper")
    rng = np.random.default_rng(0)
    model = [rng.standard_normal(PARAMS, dtype=np.float32)]
    raw = io.BytesIO()
    helper.save(model, raw)
    del model
    raw.seek(0)
    with open(folder / "update-0.scm", "wb") as out:
        write_container(out, "update-0", raw, helper_type="numpyhelper")
    with open(folder / "update-0.scm", "rb") as stream:
        LocalRepository(folder / "repo").put("models", "global", stream)
    for k in range(1, MANY):
        shutil.copyfile(folder / "update-0.scm", folder / f"update-{k}.scm")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def peak_above_base(folder: Path, strategy: str, count: int) -> int:
    """One round of `count` updates in a fresh process (continuing the session's saved state, if any)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, str(folder), strategy, str(count), str(SIZE / BENCH_SIZE)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})  # Krum: no spinning BLAS threads
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures["peak"] - figures["base"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the peak RSS")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", available_strategies())
def test_peak_memory_stays_within_three_models_and_does_not_grow_with_the_updates(updates: Path,
                                                                                  strategy: str) -> None:
    few = peak_above_base(updates, strategy, FEW)
    many = peak_above_base(updates, strategy, MANY)
    for count, peak in ((FEW, few), (MANY, many)):
        assert peak < BOUND * SIZE, f"{strategy}: {peak / 1e6:.0f} MB for {count} updates of {SIZE / 1e6:.0f} MB"
    assert many - few < 0.25 * SIZE, f"{strategy}: {few / 1e6:.0f} MB for {FEW} updates, {many / 1e6:.0f} MB for {MANY}"
