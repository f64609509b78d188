"""The buffered asynchronous aggregation step (FedBuff): a new global model from K client updates that
may have been trained from older global models.

Each update counts by what it changed relative to the model it was trained from (its base), not by its
parameters, so a stale update does not drag the global model back to where it once was:

    new = current + server_lr * sum_i w_i * (update_i - base_i) / sum_i num_examples_i
    w_i = num_examples_i / (1 + staleness_i) ** staleness_exponent

where staleness_i is the number of global versions committed since update_i's base. With every update
fresh (staleness 0, base = current) this is exactly FedAvg weighted by num_examples; stale updates take
a smaller step. The sum runs slice by slice over local copies of the files, so memory stays a few
slices whatever the model size and K.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaleout_server.aggregation.params import ArraySpec, ComputedParams, cast_to, check_layout, check_numeric
from scaleout_server.aggregation.stored import StoredParams, open_copy, write_params
from scaleout_server.controller import models
from scaleout_server.repository.base import ModelRepository
from scaleoututil.helpers.helpers import get_helper


@dataclass(frozen=True)
class BufferedUpdate:
    """One client update in the buffer: its stored model, the global model it was trained from, and
    how much it weighs (num_examples, and the staleness discount)."""

    model_id: str
    base_model_id: str
    num_examples: float
    staleness: int


def staleness_weight(num_examples: float, staleness: int, exponent: float) -> float:
    return float(num_examples) / (1.0 + max(0, staleness)) ** exponent


def buffered_step(repository: ModelRepository, helper_type: str, current_id: str, updates: list[BufferedUpdate],
                  staleness_exponent: float, server_lr: float = 1.0,
                  work_dir: Path | None = None) -> models.StoredModel:
    """Store the new global model computed from `current_id` and `updates` (see the module docstring)."""
    if not updates:
        raise ValueError("no update to aggregate")
    total = sum(u.num_examples for u in updates)
    if not total > 0:
        raise ValueError("the buffered updates report no examples")
    helper = get_helper(helper_type)
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="fedbuff-") as tmp:
        folder = Path(tmp)
        views: dict[str, StoredParams] = {}
        try:
            for model_id in dict.fromkeys([current_id, *(u.model_id for u in updates),
                                           *(u.base_model_id for u in updates)]):
                with repository.open(models.MODELS, model_id) as source:
                    views[model_id] = open_copy(source, folder / f"{len(views)}.scm", helper, folder)
            current = views[current_id]
            specs: list[ArraySpec] = list(current.specs)
            check_numeric(specs, "the global model")
            for u in updates:
                check_layout(specs, views[u.model_id].specs, f"update {u.model_id}", "the global model")
                check_layout(specs, views[u.base_model_id].specs, f"base model {u.base_model_id}", "the global model")
            terms = [(views[u.model_id], views[u.base_model_id],
                      server_lr * staleness_weight(u.num_examples, u.staleness, staleness_exponent) / total)
                     for u in updates]

            def compute(i: int, start: int, stop: int) -> np.ndarray:
                out = current.read(i, start, stop).astype(np.float64)
                for update, base, factor in terms:
                    delta = update.read(i, start, stop).astype(np.float64)
                    delta -= base.read(i, start, stop)
                    out += factor * delta
                return cast_to(out, specs[i].dtype)

            with tempfile.TemporaryFile(dir=folder) as raw:
                write_params(ComputedParams(specs, compute), raw, helper)
                raw.seek(0)
                return models.write_model(repository, raw, helper_type)
        finally:
            for view in views.values():
                view.close()
