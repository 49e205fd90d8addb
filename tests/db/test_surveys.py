"""Surveys from the researcher's side: create, status, copy, truth, answers for statistics, import."""

from __future__ import annotations

import random

import pytest

from db import repository as repo

ITEMS = [
    ("survey/r1.png", "real"),
    ("survey/s1.png", "synthetic"),
    ("survey/r2.png", "Real"),
    ("survey/s2.png", "synthetic"),
]


def test_create_and_find_by_token(db_url):
    token = repo.create_survey("Study", ITEMS, url=db_url)
    other = repo.create_survey("Demo", ITEMS[:2], is_demo=True, status="draft", url=db_url)
    assert len(token) >= 32 and token != other
    survey = repo.get_survey_by_token(token, url=db_url)
    assert (survey.title, survey.status, survey.is_demo, survey.item_count) == ("Study", "open", False, 4)
    assert repo.get_survey(survey.id, url=db_url) == survey
    assert [s.title for s in repo.list_surveys(url=db_url)] == ["Demo", "Study"]
    assert [s.title for s in repo.list_surveys(include_demo=False, url=db_url)] == ["Study"]
    items = repo.survey_items_with_truth(survey.id, url=db_url)
    assert [(i.image_path, i.truth, i.position) for i in items] == [(p, t.lower(), n) for n, (p, t) in enumerate(ITEMS)]
    assert len({i.public_id for i in items}) == 4


def test_unknown_token_and_bad_items_are_named(db_url):
    with pytest.raises(ValueError, match="unknown survey token 'nope'"):
        repo.get_survey_by_token("nope", url=db_url)
    with pytest.raises(ValueError, match="item 2 truth"):
        repo.create_survey("x", [("a.png", "real"), ("b.png", "fake")], url=db_url)
    with pytest.raises(ValueError, match="at least one item"):
        repo.create_survey("x", [], url=db_url)
    with pytest.raises(ValueError, match="survey title"):
        repo.create_survey(" ", ITEMS, url=db_url)
    with pytest.raises(ValueError, match="'paused'"):
        repo.create_survey("x", ITEMS, status="paused", url=db_url)
    assert repo.list_surveys(url=db_url) == []


def test_status_and_duplicate(db_url):
    token = repo.create_survey("Study", ITEMS, url=db_url)
    survey = repo.get_survey_by_token(token, url=db_url)
    repo.start_participant(token, url=db_url)
    repo.set_survey_status(survey.id, "closed", url=db_url)
    assert repo.get_survey(survey.id, url=db_url).status == "closed"
    with pytest.raises(ValueError, match="survey status"):
        repo.set_survey_status(survey.id, "gone", url=db_url)
    with pytest.raises(ValueError, match="12345"):
        repo.set_survey_status(12345, "open", url=db_url)
    copies = [f"survey/copy/{n}.png" for n in range(4)]  # the app writes new files for a copy
    copy = repo.get_survey_by_token(repo.duplicate_survey(survey.id, copies, url=db_url), url=db_url)
    assert (copy.title, copy.status, copy.item_count, copy.participant_count) == ("Study (copy)", "draft", 4, 0)
    old = repo.survey_items_with_truth(survey.id, url=db_url)
    new = repo.survey_items_with_truth(copy.id, url=db_url)
    assert [(i.image_path, i.truth) for i in new] == [(p, i.truth) for p, i in zip(copies, old, strict=True)]
    assert not {i.public_id for i in old} & {i.public_id for i in new}
    with pytest.raises(ValueError, match="has 4 items; got 3 image paths"):
        repo.duplicate_survey(survey.id, copies[:3], url=db_url)


def test_survey_answers_pair_truth_with_answer(db_url):
    token = repo.create_survey("Study", ITEMS, url=db_url)
    survey = repo.get_survey_by_token(token, url=db_url)
    for experience in (5, 2):
        resume = repo.start_participant(token, experience, rng=random.Random(experience), url=db_url)
        while (item := repo.next_unanswered_item(resume, url=db_url)) is not None:
            repo.record_answer(resume, item.public_id, "real", url=db_url)
        repo.finish_participant(resume, url=db_url)
    records = repo.survey_answers(survey.id, url=db_url)
    assert len(records) == 8
    assert [r.question for r in records[:4]] == [1, 2, 3, 4]
    assert [(r.experience, r.truth, r.answer) for r in records[:4]] == [
        (5, "real", "real"),
        (5, "synthetic", "real"),
        (5, "real", "real"),
        (5, "synthetic", "real"),
    ]
    assert repo.get_survey(survey.id, url=db_url).finished_count == 2


def test_import_responses_all_or_nothing(db_url):
    token = repo.create_survey("Original study", ITEMS, status="closed", url=db_url)
    survey = repo.get_survey_by_token(token, url=db_url)
    items = repo.survey_items_with_truth(survey.id, url=db_url)
    good = [
        {"participant": "P1", "experience": 5, "question": 1, "answer": "real", "truth": "real"},
        {"participant": "P1", "question": items[1].public_id, "answer": "Synthetic", "strategy": "nuclei"},
        {"participant": "P2", "experience": 1, "question": 2, "answer": "real"},
    ]
    bad = good + [{"participant": "P3", "question": 4, "answer": "real", "truth": "real"}]  # truth is synthetic
    with pytest.raises(ValueError, match="response 4: truth 'real' disagrees"):
        repo.import_responses(survey.id, bad, url=db_url)
    assert repo.survey_answers(survey.id, url=db_url) == []
    for broken, message in [
        ([{"participant": "P", "question": 9, "answer": "real"}], "question 9"),
        ([{"participant": "P", "question": 1, "answer": "maybe"}], "answer"),
        ([{"participant": "P", "question": 1, "answer": "real", "experience": 6}], "experience"),
        ([{"participant": "P", "question": 1, "answer": "real"}] * 2, "twice"),
        ([{"participant": "P", "answer": "real"}], "lacks question"),
        ([], "no responses"),
    ]:
        with pytest.raises(ValueError, match=message):
            repo.import_responses(survey.id, broken, url=db_url)
    assert repo.import_responses(survey.id, good, url=db_url) == repo.ImportSummary(participants=2, answers=3)
    records = repo.survey_answers(survey.id, url=db_url)
    assert [(r.experience, r.question, r.answer) for r in records] == [
        (5, 1, "real"),
        (5, 2, "synthetic"),
        (1, 2, "real"),
    ]
    assert repo.get_survey(survey.id, url=db_url).finished_count == 2


def test_tokens_never_start_with_a_csv_formula_character(monkeypatch):
    """A leading "-" would be neutralised as a formula in the CSV exports ('-... in a spreadsheet)."""
    import secrets

    from db.repository._common import new_token

    drawn = iter(["-starts-with-minus", "_fine-token"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert new_token(12) == "_fine-token"
