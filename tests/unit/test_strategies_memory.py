"""Peak memory of aggregation does not grow with the number of updates (measured in a fresh process).

Each measurement runs the combiner's aggregation path in a subprocess (`Rounds._begin`: the global model
copied from a LocalRepository; `AggregationJob.fold` per update, read in place; `Rounds._conclude`: the
result streamed into the repository) and reports
its peak RSS above what the process held after its imports. The peak is the kernel's high-water mark
of the process's own memory (`VmHWM` in /proc/self/status): `ru_maxrss` would not do, since Linux
carries the parent's peak over into a child started with fork/exec. Updates are 40 MB float32 models,
written once by the test and copied.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from scaleout_server.repository.local import LocalRepository
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import write_container

ROOT = Path(__file__).resolve().parents[2]
PARAMS = 10_000_000  # float32: 40 MB per update
SIZE = PARAMS * 4

MEASURE = """
import json, sys
from collections.abc import Iterator
from pathlib import Path
from scaleout_server.aggregation.job import AggregationJob
from scaleout_server.aggregation.registry import make_strategy
from scaleout_server.combiner.rounds import Rounds
from scaleout_server.repository.local import LocalRepository
from scaleoututil.helpers.helpers import get_helper

work, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def high_water():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

helper = get_helper("numpyhelper")
repository = LocalRepository(work / "repo")
rounds = Rounds(None, repository, None, work / "work", state_dir=work / "state")
base = high_water()
job = AggregationJob(make_strategy(name, helper), helper, work / "work")
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
    """A global model and 30 updates of 40 MB each on disk (1.2 GB; removed after the module)."""
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
    for k in range(1, 30):
        shutil.copyfile(folder / "update-0.scm", folder / f"update-{k}.scm")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def peak_above_base(folder: Path, strategy: str, count: int) -> int:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(folder), strategy, str(count)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures["peak"] - figures["base"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the peak RSS")
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("strategy", "bound"), [("fedavg", 3.0), ("fedmedian", 3.0)])
def test_peak_memory_does_not_grow_with_the_number_of_updates(updates: Path, strategy: str, bound: float) -> None:
    few = peak_above_base(updates, strategy, 5)
    many = peak_above_base(updates, strategy, 30)
    assert many < bound * SIZE, f"{strategy}: {many / 1e6:.0f} MB for 30 updates of {SIZE / 1e6:.0f} MB"
    assert many - few < 0.25 * SIZE, f"{strategy}: {few / 1e6:.0f} MB for 5 updates, {many / 1e6:.0f} MB for 30"
