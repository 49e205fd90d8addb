"""Evaluation rows: running -> done with a summary, or failed with its error; listed newest first."""

from __future__ import annotations

import pytest

from db import repository as repo


def test_an_evaluation_runs_then_finishes_with_its_summary(db_url):
    ev = repo.add_evaluation("captions", {"n": 4, "caption": "c"}, "evaluations/abc", created_by="ada", url=db_url)
    assert (ev.state, ev.summary, ev.finished_at) == ("running", None, None)
    done = repo.finish_evaluation(ev.id, summary={"mentions_glomeruli": 0.75}, url=db_url)
    assert done.state == "done" and done.summary == {"mentions_glomeruli": 0.75} and done.finished_at
    assert repo.get_evaluation(ev.id, url=db_url).params == {"n": 4, "caption": "c"}


def test_a_failed_evaluation_keeps_its_error_and_lists_newest_first(db_url):
    first = repo.add_evaluation("realism", {}, "evaluations/one", url=db_url)
    second = repo.add_evaluation("mix", {}, "evaluations/two", url=db_url)
    repo.finish_evaluation(first.id, error="ValueError: too few images", url=db_url)
    assert [e.id for e in repo.list_evaluations(url=db_url)] == [second.id, first.id]
    assert [e.state for e in repo.list_evaluations("realism", url=db_url)] == ["failed"]
    assert repo.get_evaluation(first.id, url=db_url).error == "ValueError: too few images"


def test_unknown_kinds_and_ids_are_named(db_url):
    with pytest.raises(ValueError, match="evaluation kind must be one of captions, realism, mix; got 'fid'"):
        repo.add_evaluation("fid", {}, "evaluations/x", url=db_url)
    with pytest.raises(repo.NotFoundError, match="no evaluation with id 999"):
        repo.finish_evaluation(999, summary={}, url=db_url)
