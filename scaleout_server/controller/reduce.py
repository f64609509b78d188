"""The reduce across combiners: one global model from the combiners' partial aggregates.

Each combiner's model already averages its own clients' updates, weighted by their examples; the
global model weighs each combiner by the examples behind its model, so that splitting clients over
several combiners gives the same result as one combiner holding them all (for FedAvg).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from scaleout_server.controller import models
from scaleout_server.repository.base import ModelRepository
from scaleoututil.helpers.helpers import get_helper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartialModel:
    """One combiner's contribution to a round."""

    combiner_name: str
    model_id: str
    num_examples: float


@dataclass(frozen=True)
class Reduced:
    model: models.StoredModel
    partials_to_delete: list[str]  # combiner models that are no longer needed once the round is committed


def reduce_partials(repository: ModelRepository, partials: list[PartialModel], helper_type: str) -> Reduced:
    """One partial is adopted as it is (no copy); several are averaged, weighted by num_examples,
    into a new container. When no partial reports any examples, they weigh equally."""
    if not partials:
        raise ValueError("nothing to reduce: no combiner produced a model")
    if len(partials) == 1:
        return Reduced(models.describe(repository, partials[0].model_id, helper_type), [])
    helper = get_helper(helper_type)
    equal = sum(max(p.num_examples, 0.0) for p in partials) <= 0
    if equal:
        log.warning("no combiner reported num_examples; averaging %d combiner models with equal weights",
                    len(partials))
    average = None
    seen = 0.0
    for partial in partials:
        weight = 1.0 if equal else max(partial.num_examples, 0.0)
        if weight <= 0:
            log.warning("combiner %s reported no examples behind model %s; it gets no weight",
                        partial.combiner_name, partial.model_id)
            continue
        params = models.load_params(repository, partial.model_id, helper_type)
        seen += weight
        average = params if average is None else helper.increment_average(average, params, weight, seen)
    stored = models.save_params(repository, average, helper_type)
    return Reduced(stored, [p.model_id for p in partials])
