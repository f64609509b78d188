"""scaleoututil.partitioning: which share a client has (Partition) and how data sets are cut (iid, Dirichlet)."""

from __future__ import annotations

import numpy as np
import pytest

from scaleoututil.partitioning import NUM_PARTITIONS_ENV, PARTITION_ID_ENV, Partition, dirichlet_split, iid_split

# 10 classes of unequal size, 1000 items, in a shuffled order (like real labels)
LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(10), [40, 60, 80, 100, 120, 140, 160, 90, 110, 100]))


def assert_covers_each_index_once(shares: list[np.ndarray], num_items: int) -> None:
    everything = np.concatenate(shares)
    assert np.issubdtype(everything.dtype, np.integer)
    assert np.array_equal(np.sort(everything), np.arange(num_items))
    assert all(np.array_equal(share, np.sort(share)) for share in shares)


def class_fractions(shares: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    return np.array([np.bincount(labels[share], minlength=10) / max(len(share), 1) for share in shares])


# -- Partition ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("index", "count", "message"), [
    (0, 0, "count >= 1"), (3, 3, "outside 0..2"), (-1, 2, "outside 0..1"),
])
def test_partition_refuses_an_index_outside_its_count(index: int, count: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Partition(index, count)


def test_partition_env_round_trips_through_from_env() -> None:
    partition = Partition(3, 8)
    assert partition.env() == {PARTITION_ID_ENV: "3", NUM_PARTITIONS_ENV: "8"}
    assert Partition.from_env(partition.env()) == partition


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({PARTITION_ID_ENV: " ", NUM_PARTITIONS_ENV: ""}, None),
    ({PARTITION_ID_ENV: " 2 ", NUM_PARTITIONS_ENV: "5"}, Partition(2, 5)),
    ({NUM_PARTITIONS_ENV: "4"}, Partition(0, 4)),
    ({PARTITION_ID_ENV: "0"}, Partition(0, 1)),
])
def test_partition_from_env_reads_both_variables_with_defaults(env: dict[str, str],
                                                              expected: Partition | None) -> None:
    assert Partition.from_env(env) == expected


@pytest.mark.parametrize("env", [
    {PARTITION_ID_ENV: "one", NUM_PARTITIONS_ENV: "2"},
    {PARTITION_ID_ENV: "5", NUM_PARTITIONS_ENV: "5"},
    {PARTITION_ID_ENV: "1"},  # index 1 of the default count 1
])
def test_partition_from_env_error_names_both_variables(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=f"{PARTITION_ID_ENV}=.*{NUM_PARTITIONS_ENV}="):
        Partition.from_env(env)


# -- iid_split ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("num_items", "num_partitions"), [(1000, 3), (10, 10), (7, 1), (3, 5)])
def test_iid_split_covers_each_index_once_in_near_equal_shares(num_items: int, num_partitions: int) -> None:
    shares = iid_split(num_items, num_partitions, seed=1)
    assert len(shares) == num_partitions
    assert_covers_each_index_once(shares, num_items)
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


def test_iid_split_is_repeatable_for_a_seed_and_differs_between_seeds() -> None:
    a, b, c = iid_split(100, 4, seed=3), iid_split(100, 4, seed=3), iid_split(100, 4, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_iid_split_refuses_zero_partitions() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        iid_split(10, 0)


# -- dirichlet_split ------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.05, 0.5, 1000.0])
@pytest.mark.parametrize("num_partitions", [1, 3, 20])
def test_dirichlet_split_covers_each_index_exactly_once(alpha: float, num_partitions: int) -> None:
    shares = dirichlet_split(LABELS, num_partitions, alpha=alpha, seed=0)
    assert len(shares) == num_partitions
    assert_covers_each_index_once(shares, len(LABELS))
    assert min(len(s) for s in shares) >= 1  # the default min_size


def test_dirichlet_split_with_small_alpha_is_non_iid_and_large_alpha_is_near_iid() -> None:
    overall = np.bincount(LABELS, minlength=10) / len(LABELS)
    skewed = class_fractions(dirichlet_split(LABELS, 5, alpha=0.1, seed=0), LABELS)
    even = class_fractions(dirichlet_split(LABELS, 5, alpha=1000.0, seed=0), LABELS)
    # total variation distance of each share's label mix from the whole data set's
    skewed_tv = 0.5 * np.abs(skewed - overall).sum(axis=1)
    even_tv = 0.5 * np.abs(even - overall).sum(axis=1)
    assert skewed_tv.mean() > 0.4, skewed_tv
    assert even_tv.max() < 0.1, even_tv
    assert skewed.max(axis=1).mean() > 0.4  # a dominant class per share


def test_dirichlet_split_is_repeatable_for_a_seed_and_differs_between_seeds() -> None:
    a = dirichlet_split(LABELS, 4, alpha=0.5, seed=11)
    b = dirichlet_split(list(LABELS), 4, alpha=0.5, seed=11)  # a plain list of labels works the same
    c = dirichlet_split(LABELS, 4, alpha=0.5, seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_dirichlet_split_gives_every_share_min_size_items() -> None:
    first_draw = dirichlet_split(LABELS, 10, alpha=0.5, seed=0)
    assert min(len(s) for s in first_draw) < 50  # so min_size=50 needs further draws
    shares = dirichlet_split(LABELS, 10, alpha=0.5, seed=0, min_size=50)
    assert min(len(s) for s in shares) >= 50
    assert_covers_each_index_once(shares, len(LABELS))


def test_dirichlet_split_takes_string_labels() -> None:
    labels = np.array(["cat", "dog", "bird"] * 30)
    shares = dirichlet_split(labels, 3, alpha=0.5, seed=2)
    assert_covers_each_index_once(shares, len(labels))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_partitions": 0}, "at least 1"),
    ({"num_partitions": 3, "alpha": 0.0}, "alpha must be positive"),
    ({"num_partitions": 3, "alpha": -1.0}, "alpha must be positive"),
    ({"num_partitions": 101, "min_size": 10}, "cannot give 101 partitions 10"),
])
def test_dirichlet_split_refuses_impossible_requests(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dirichlet_split(LABELS, **kwargs)  # type: ignore[arg-type]


def test_dirichlet_split_says_what_to_change_when_min_size_is_never_reached() -> None:
    # enough items in total, but with one class and a tiny alpha almost every draw starves some share
    labels = np.zeros(40, dtype=int)
    with pytest.raises(ValueError, match="raise alpha or lower the number of partitions"):
        dirichlet_split(labels, 4, alpha=0.001, seed=0, min_size=10)


def test_dirichlet_split_refuses_one_hot_and_empty_labels() -> None:
    import numpy as np
    import pytest

    from scaleoututil.partitioning import dirichlet_split

    with pytest.raises(ValueError, match="argmax"):
        dirichlet_split(np.eye(4), 2)
    with pytest.raises(ValueError, match="nothing to split"):
        dirichlet_split([], 2, min_size=0)
