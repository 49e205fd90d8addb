"""One person, one record: one-use invitations, the participant cap, the shared link switch, exclusions."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from db import repository as repo
from renal_ldm.survey import INVITATIONS_PER_BATCH_MAX

ITEMS = [(f"survey/{i}.png", "real" if i % 2 else "synthetic") for i in range(4)]
TABS = 8


@pytest.fixture
def survey(db_url) -> repo.Survey:
    return repo.get_survey_by_token(repo.create_survey("Invited study", ITEMS, url=db_url), url=db_url)


def test_an_invitation_starts_one_participant_then_resumes_them(db_url, survey):
    first, second = repo.create_invitations(survey.id, 2, url=db_url)
    assert first.token != second.token and not first.used and not second.used
    assert repo.get_invitation(first.token, url=db_url) == repo.InvitationStatus(survey.id, None)

    resume = repo.start_invited_participant(first.token, 4, url=db_url)
    again = repo.start_invited_participant(first.token, 1, url=db_url)  # the link opened again, another day
    assert again == resume
    assert repo.get_invitation(first.token, url=db_url).resume_token == resume
    assert repo.get_participant(resume, url=db_url).experience == 4  # the second opening changed nothing
    used, unused = repo.list_invitations(survey.id, url=db_url)
    assert (used.token, used.used, used.participant_id) == (
        first.token,
        True,
        repo.get_participant(resume, url=db_url).id,
    )
    assert used.used_at is not None and not unused.used
    assert repo.get_survey(survey.id, url=db_url).participant_count == 1
    (person,) = repo.survey_participants(survey.id, url=db_url)
    assert person.invited and not person.excluded


def test_two_tabs_opening_one_unused_invitation_at_once_give_one_participant(db_url, survey):
    (invitation,) = repo.create_invitations(survey.id, 1, url=db_url)
    barrier = threading.Barrier(TABS)

    def open_tab(n: int) -> str:
        barrier.wait()
        return repo.start_invited_participant(invitation.token, 1 + n % 5, url=db_url)

    with ThreadPoolExecutor(TABS) as pool:
        tokens = set(pool.map(open_tab, range(TABS)))
    assert len(tokens) == 1
    assert repo.get_survey(survey.id, url=db_url).participant_count == 1
    assert repo.get_invitation(invitation.token, url=db_url).resume_token == tokens.pop()


def test_invitation_errors_name_the_value(db_url, survey):
    with pytest.raises(ValueError, match="unknown invitation token 'nope'"):
        repo.start_invited_participant("nope", url=db_url)
    with pytest.raises(ValueError, match="unknown invitation token 'nope'"):
        repo.get_invitation("nope", url=db_url)
    for bad in (0, INVITATIONS_PER_BATCH_MAX + 1, 2.5, True):
        with pytest.raises(ValueError, match=f"from 1 to {INVITATIONS_PER_BATCH_MAX}, got {bad!r}"):
            repo.create_invitations(survey.id, bad, url=db_url)
    with pytest.raises(ValueError, match="no survey with id 999"):
        repo.create_invitations(999, 1, url=db_url)
    assert repo.list_invitations(survey.id, url=db_url) == []


def test_participant_cap_refuses_the_next_participant(db_url, survey):
    repo.set_participant_cap(survey.id, 2, url=db_url)
    assert repo.get_survey(survey.id, url=db_url).participant_cap == 2
    token = survey.token
    repo.start_participant(token, url=db_url)
    (invitation,) = repo.create_invitations(survey.id, 1, url=db_url)
    resume = repo.start_invited_participant(invitation.token, url=db_url)  # invitations count towards the cap
    assert repo.get_survey(survey.id, url=db_url).full
    with pytest.raises(repo.SurveyFullError, match="has all the participants it needs"):
        repo.start_participant(token, url=db_url)
    (late,) = repo.create_invitations(survey.id, 1, url=db_url)
    with pytest.raises(repo.SurveyFullError):
        repo.start_invited_participant(late.token, url=db_url)
    assert not repo.get_invitation(late.token, url=db_url).used  # a refused start leaves the invitation unused
    assert repo.start_invited_participant(invitation.token, url=db_url) == resume  # a started one still resumes
    repo.set_participant_cap(survey.id, None, url=db_url)
    repo.start_participant(token, url=db_url)
    assert repo.get_survey(survey.id, url=db_url).participant_count == 3
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match=f"participant cap .* got {bad!r}"):
            repo.set_participant_cap(survey.id, bad, url=db_url)


def test_participant_cap_holds_when_many_start_at_once(db_url, survey):
    cap = 3
    repo.set_participant_cap(survey.id, cap, url=db_url)
    barrier = threading.Barrier(TABS)

    def start(_n: int) -> str | None:
        barrier.wait()
        try:
            return repo.start_participant(survey.token, url=db_url)
        except repo.SurveyFullError:
            return None

    with ThreadPoolExecutor(TABS) as pool:
        started = [t for t in pool.map(start, range(TABS)) if t]
    assert len(started) == cap
    assert repo.get_survey(survey.id, url=db_url).participant_count == cap


def test_shared_link_off_leaves_invitations_working(db_url, survey):
    assert repo.get_survey(survey.id, url=db_url).shared_link
    repo.set_shared_link(survey.id, False, url=db_url)
    with pytest.raises(repo.SharedLinkOffError, match="by invitation only"):
        repo.start_participant(survey.token, url=db_url)
    (invitation,) = repo.create_invitations(survey.id, 1, url=db_url)
    assert repo.start_invited_participant(invitation.token, url=db_url)
    repo.set_shared_link(survey.id, True, url=db_url)
    assert repo.start_participant(survey.token, url=db_url)


def test_closed_survey_refuses_an_unused_invitation(db_url, survey):
    (invitation,) = repo.create_invitations(survey.id, 1, url=db_url)
    repo.set_survey_status(survey.id, "closed", url=db_url)
    with pytest.raises(ValueError, match="closed"):
        repo.start_invited_participant(invitation.token, url=db_url)
    assert not repo.get_invitation(invitation.token, url=db_url).used


def test_exclusion_is_stored_per_participant(db_url, survey):
    a = repo.get_participant(repo.start_participant(survey.token, 2, url=db_url), url=db_url)
    b = repo.get_participant(repo.start_participant(survey.token, 5, url=db_url), url=db_url)
    repo.set_participant_excluded(survey.id, b.id, True, url=db_url)
    assert [(p.id, p.excluded) for p in repo.survey_participants(survey.id, url=db_url)] == [
        (a.id, False),
        (b.id, True),
    ]
    repo.set_participant_excluded(survey.id, b.id, False, url=db_url)
    assert not any(p.excluded for p in repo.survey_participants(survey.id, url=db_url))
    other = repo.get_survey_by_token(repo.create_survey("Other", ITEMS, url=db_url), url=db_url)
    with pytest.raises(ValueError, match=f"survey {other.id} has no participant {a.id}"):
        repo.set_participant_excluded(other.id, a.id, True, url=db_url)
