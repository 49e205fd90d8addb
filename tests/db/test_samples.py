"""Samples: store, filter, page, delete (the row only; the caller removes the file)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from db import repository as repo


def _new(i: int, **overrides) -> dict:
    fields = dict(
        image_path=f"samples/run/{i:04d}.png",
        caption=f"caption {i}",
        model_name="demo",
        seed=i,
        steps=50,
        guidance=1.5,
        size=256,
        run_id="run-1",
        extra={"i": i},
    )
    return fields | overrides


def test_add_get_and_newest_first(db_url):
    first = repo.add_sample(_new(0), url=db_url)
    batch = repo.add_samples([repo.NewSample(**_new(i)) for i in (1, 2)], url=db_url)
    assert isinstance(first, repo.Sample) and first.created_at.tzinfo is not None
    assert repo.get_sample(first.id, url=db_url) == first
    assert repo.get_sample(10**6, url=db_url) is None
    assert [s.seed for s in repo.list_samples(url=db_url)] == [2, 1, 0]
    assert batch[0].extra == {"i": 1} and batch[0].scheduler == "ddim" and batch[0].eta == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):  # frozen: never a live row
        first.caption = "x"


def test_filters_pagination_and_count(db_url):
    repo.add_samples(
        [_new(i, model_name="demo" if i % 2 else "big", caption=f"Glomeruli_{i} 100%") for i in range(7)], url=db_url
    )
    assert repo.count_samples(url=db_url) == 7
    assert repo.count_samples(model_name="big", url=db_url) == 4
    assert [s.seed for s in repo.list_samples(caption_contains="glomeruli_3", url=db_url)] == [3]
    assert repo.count_samples(caption_contains="100%", url=db_url) == 7
    assert repo.count_samples(caption_contains="_%", url=db_url) == 0  # LIKE wildcards are escaped
    pages = [repo.list_samples(limit=3, offset=o, url=db_url) for o in (0, 3, 6)]
    assert [[s.seed for s in p] for p in pages] == [[6, 5, 4], [3, 2, 1], [0]]
    now = datetime.now(UTC)
    assert repo.count_samples(since=now - timedelta(hours=1), url=db_url) == 7
    assert repo.count_samples(until=now - timedelta(hours=1), url=db_url) == 0
    assert repo.count_samples(since=(now + timedelta(hours=1)).replace(tzinfo=None), url=db_url) == 0
    assert repo.sample_model_names(url=db_url) == ["big", "demo"]
    with pytest.raises(ValueError, match="limit"):
        repo.list_samples(limit=0, url=db_url)


def test_delete_returns_image_path_and_removes_only_that_row(db_url):
    a, b = repo.add_samples([_new(1), _new(2)], url=db_url)
    assert repo.delete_sample(a.id, url=db_url) == "samples/run/0001.png"
    assert [s.id for s in repo.list_samples(url=db_url)] == [b.id]
    with pytest.raises(ValueError, match=str(a.id)):
        repo.delete_sample(a.id, url=db_url)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"size": -1}, "size"),
        ({"seed": -5}, "seed"),
        ({"image_path": "/etc/passwd"}, "relative"),
        ({"image_path": "../x.png"}, "relative"),
        ({"model_name": " "}, "model_name"),
    ],
)
def test_bad_samples_are_refused_by_name(db_url, overrides, message):
    with pytest.raises(ValueError, match=message):
        repo.add_sample(_new(1, **overrides), url=db_url)
    assert repo.count_samples(url=db_url) == 0


def test_a_failing_batch_stores_nothing(db_url):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):  # the same image path twice
        repo.add_samples([_new(1), _new(2), _new(1)], url=db_url)
    assert repo.count_samples(url=db_url) == 0
