"""Taking a survey: stored random order, resumable progress, no truth leaks, idempotent answers."""

from __future__ import annotations

import dataclasses
import random

import pytest

from db import repository as repo
from renal_ldm.survey import STRATEGY_MAX_CHARS

ITEMS = [(f"survey/{i}.png", "real" if i % 2 else "synthetic") for i in range(6)]


@pytest.fixture
def survey_token(db_url) -> str:
    return repo.create_survey("Study", ITEMS, url=db_url)


def test_order_is_drawn_once_and_stored(db_url, survey_token):
    a = repo.start_participant(survey_token, 3, rng=random.Random(1), url=db_url)
    b = repo.start_participant(survey_token, 3, rng=random.Random(1), url=db_url)
    c = repo.start_participant(survey_token, url=db_url)  # system randomness
    pa, pb, pc = (repo.get_participant(t, url=db_url) for t in (a, b, c))
    assert len({a, b, c}) == 3
    assert pa.item_order == pb.item_order and sorted(pa.item_order) == sorted(pc.item_order)
    assert pa.item_order != tuple(sorted(pa.item_order))  # shuffled (this seed does move items)
    assert (pa.answered, pa.total, pa.experience, pc.experience, pa.finished) == (0, 6, 3, None, False)
    assert repo.get_participant(a, url=db_url).item_order == pa.item_order  # stable across reads


def test_walk_through_in_stored_order_without_truth(db_url, survey_token):
    resume = repo.start_participant(survey_token, rng=random.Random(7), url=db_url)
    participant = repo.get_participant(resume, url=db_url)
    survey = repo.get_survey_by_token(survey_token, url=db_url)
    by_id = {i.id: i for i in repo.survey_items_with_truth(survey.id, url=db_url)}
    seen = []
    while (item := repo.next_unanswered_item(resume, url=db_url)) is not None:
        assert "truth" not in {f.name for f in dataclasses.fields(item)}
        assert item.number == len(seen) + 1 and item.total == 6
        seen.append(item.public_id)
        assert repo.record_answer(resume, item.public_id, "synthetic", url=db_url) is True
    assert seen == [by_id[i].public_id for i in participant.item_order]
    repo.set_experience(resume, 5, url=db_url)
    repo.set_strategy(resume, "  looked at nuclei  ", url=db_url)
    repo.finish_participant(resume, url=db_url)
    first_finish = repo.get_participant(resume, url=db_url).finished_at
    repo.finish_participant(resume, url=db_url)
    done = repo.get_participant(resume, url=db_url)
    assert (done.answered, done.experience, done.strategy, done.finished_at) == (6, 5, "looked at nuclei", first_finish)
    repo.set_strategy(resume, "   ", url=db_url)
    assert repo.get_participant(resume, url=db_url).strategy is None


def test_strategy_keeps_up_to_the_vocabulary_limit_and_refuses_more(db_url, survey_token):
    resume = repo.start_participant(survey_token, url=db_url)
    longest = "n" * STRATEGY_MAX_CHARS
    repo.set_strategy(resume, longest, url=db_url)
    assert repo.get_participant(resume, url=db_url).strategy == longest
    with pytest.raises(ValueError, match=f"at most {STRATEGY_MAX_CHARS} characters, got {STRATEGY_MAX_CHARS + 1}"):
        repo.set_strategy(resume, longest + "n", url=db_url)
    assert repo.get_participant(resume, url=db_url).strategy == longest


def test_record_answer_is_idempotent_first_answer_wins(db_url, survey_token):
    resume = repo.start_participant(survey_token, url=db_url)
    item = repo.next_unanswered_item(resume, url=db_url)
    assert repo.record_answer(resume, item.public_id, "real", url=db_url) is True
    assert repo.record_answer(resume, item.public_id, "real", url=db_url) is False
    assert repo.record_answer(resume, item.public_id, "synthetic", url=db_url) is False
    survey = repo.get_survey_by_token(survey_token, url=db_url)
    assert [r.answer for r in repo.survey_answers(survey.id, url=db_url)] == ["real"]


def test_bad_participant_input_is_named(db_url, survey_token):
    with pytest.raises(ValueError, match="unknown survey token 'bogus'"):
        repo.start_participant("bogus", url=db_url)
    for experience in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match=f"experience .* got {experience!r}"):
            repo.start_participant(survey_token, experience, url=db_url)
    resume = repo.start_participant(survey_token, url=db_url)
    item = repo.next_unanswered_item(resume, url=db_url)
    with pytest.raises(ValueError, match="'maybe'"):
        repo.record_answer(resume, item.public_id, "maybe", url=db_url)
    with pytest.raises(ValueError, match="'nope'"):
        repo.record_answer(resume, "nope", "real", url=db_url)
    with pytest.raises(ValueError, match="unknown resume token 'lost'"):
        repo.record_answer("lost", item.public_id, "real", url=db_url)
    with pytest.raises(ValueError, match="experience"):
        repo.set_experience(resume, 9, url=db_url)
    other = repo.create_survey("Other", ITEMS, url=db_url)
    foreign = repo.next_unanswered_item(repo.start_participant(other, url=db_url), url=db_url)
    with pytest.raises(ValueError, match="not part of"):
        repo.record_answer(resume, foreign.public_id, "real", url=db_url)


def test_closed_survey_and_finished_participant_accept_no_new_answers(db_url, survey_token):
    survey = repo.get_survey_by_token(survey_token, url=db_url)
    resume = repo.start_participant(survey_token, url=db_url)
    first = repo.next_unanswered_item(resume, url=db_url)
    repo.record_answer(resume, first.public_id, "real", url=db_url)
    repo.finish_participant(resume, url=db_url)
    second = repo.next_unanswered_item(resume, url=db_url)
    with pytest.raises(ValueError, match="already finished"):
        repo.record_answer(resume, second.public_id, "real", url=db_url)
    assert repo.record_answer(resume, first.public_id, "real", url=db_url) is False  # a late retry is harmless
    late = repo.start_participant(survey_token, url=db_url)
    repo.set_survey_status(survey.id, "closed", url=db_url)
    with pytest.raises(ValueError, match="closed"):
        repo.record_answer(late, repo.next_unanswered_item(late, url=db_url).public_id, "real", url=db_url)
    with pytest.raises(ValueError, match="closed"):
        repo.start_participant(survey_token, url=db_url)
    assert len(repo.survey_answers(survey.id, url=db_url)) == 1
