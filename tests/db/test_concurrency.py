"""Many participants at once: no answer lost, none duplicated; a double submit stores one row."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from db import repository as repo

PARTICIPANTS = 20
ITEMS = [(f"survey/{i}.png", "real" if i % 2 else "synthetic") for i in range(8)]


def _intended(participant: int, public_id: str) -> str:
    return "real" if (participant + sum(map(ord, public_id))) % 2 else "synthetic"


def test_twenty_participants_answering_at_once_lose_nothing(db_url):
    token = repo.create_survey("Concurrent", ITEMS, url=db_url)
    survey = repo.get_survey_by_token(token, url=db_url)
    barrier = threading.Barrier(PARTICIPANTS)

    def take_survey(n: int) -> tuple[int, dict[str, str]]:
        barrier.wait()
        resume = repo.start_participant(token, experience=1 + n % 5, url=db_url)
        given = {}
        while (item := repo.next_unanswered_item(resume, url=db_url)) is not None:
            given[item.public_id] = _intended(n, item.public_id)
            assert repo.record_answer(resume, item.public_id, given[item.public_id], url=db_url)
        repo.finish_participant(resume, url=db_url)
        return repo.get_participant(resume, url=db_url).id, given

    with ThreadPoolExecutor(PARTICIPANTS) as pool:
        results = dict(pool.map(take_survey, range(PARTICIPANTS)))

    records = repo.survey_answers(survey.id, url=db_url)
    assert len(records) == PARTICIPANTS * len(ITEMS)
    stored = {(r.participant_id, r.item_public_id): r.answer for r in records}
    assert len(stored) == len(records)  # no duplicates
    assert stored == {(pid, q): a for pid, given in results.items() for q, a in given.items()}
    assert repo.get_survey(survey.id, url=db_url).finished_count == PARTICIPANTS


def test_the_same_answer_submitted_concurrently_is_stored_once(db_url):
    token = repo.create_survey("Double click", ITEMS, url=db_url)
    survey = repo.get_survey_by_token(token, url=db_url)
    resume = repo.start_participant(token, url=db_url)
    clicks = 6
    for _ in range(3):  # three items, each clicked six times at once with alternating answers
        item = repo.next_unanswered_item(resume, url=db_url)
        barrier = threading.Barrier(clicks)

        def click(n: int, public_id: str = item.public_id, barrier=barrier) -> tuple[bool, str]:
            answer = "real" if n % 2 else "synthetic"
            barrier.wait()
            return repo.record_answer(resume, public_id, answer, url=db_url), answer

        with ThreadPoolExecutor(clicks) as pool:
            outcomes = list(pool.map(click, range(clicks)))
        winners = [answer for stored, answer in outcomes if stored]
        assert len(winners) == 1
        rows = [r for r in repo.survey_answers(survey.id, url=db_url) if r.item_public_id == item.public_id]
        assert [r.answer for r in rows] == winners  # the first answer wins, later ones change nothing
    assert repo.get_participant(resume, url=db_url).answered == 3
