"""The researcher's side of the survey, for the Manage surveys and Results pages: no widgets here.

- creating a survey from gathered files (app.survey_files): every file checked and normalised the same way
  (renal_ldm.survey_images); any refused file (an image smaller than the survey size too, unless up-scaling is
  allowed) stops the creation with one message per file, and nothing is stored (the researcher's uploads stay
  in the form to fix and retry); differences between the halves' native sizes, formats, modes and colour
  profiles are warnings; storing (with each image's provenance) is app.survey_store;
- results: answers -> renal_ldm.survey records -> statistics, tables, heatmap data, CSV import with line numbers.

The demo survey is app.survey_demo.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.survey_files import FROM_UPLOAD, SourceFile
from app.survey_store import create_image_survey, read_image_bytes, thumbnail_png
from db import repository as repo
from renal_ldm import survey as stats_lib
from renal_ldm.csv_cells import csv_text
from renal_ldm.survey_images import DEFAULT_MAX_PIXELS, SurveyImage, compare_halves, normalise_files

# ------------------------------------------------------------------------------------------------ links


def participant_link(token: str) -> str:
    """The link relative to the app's address (what the CLI prints too)."""
    return f"?survey={token}"


def invitation_link(token: str) -> str:
    """A one-use invitation's link relative to the app's address: for one person only."""
    return f"?invite={token}"


def _absolute(relative: str, page_url: str | None, base_path: str) -> str:
    if not page_url:
        return relative
    parts = urlsplit(page_url)
    base = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
    return f"{parts.scheme}://{parts.netloc}{base}{relative}"


def absolute_link(token: str, page_url: str | None, base_path: str = "") -> str:
    """The full participant link from the browser's page URL (st.context.url) and server.baseUrlPath."""
    return _absolute(participant_link(token), page_url, base_path)


def absolute_invitation_link(token: str, page_url: str | None, base_path: str = "") -> str:
    """The full link of a one-use invitation, built like absolute_link."""
    return _absolute(invitation_link(token), page_url, base_path)


INVITATION_COLUMNS = ("survey", "link", "status", "created_at", "used_at")
USED, UNUSED = "used", "unused"


def invitation_rows(invitations: Sequence[repo.Invitation], page_url: str | None, base_path: str = "") -> list[dict]:
    """The invitations as Manage surveys lists them: the link, used or unused, when."""
    return [
        {
            "link": absolute_invitation_link(i.token, page_url, base_path),
            "status": USED if i.used else UNUSED,
            "created_at": f"{i.created_at:%Y-%m-%d %H:%M} UTC",
            "used_at": "" if i.used_at is None else f"{i.used_at:%Y-%m-%d %H:%M} UTC",
        }
        for i in invitations
    ]


def invitations_csv(
    survey: repo.Survey, invitations: Sequence[repo.Invitation], page_url: str | None, base_path: str = ""
) -> str:
    """The invitations as CSV for a mail merge (one link per person), every cell neutralised (csv_cells)."""
    rows = invitation_rows(invitations, page_url, base_path)
    return csv_text(INVITATION_COLUMNS, [[survey.title, *(r[c] for c in INVITATION_COLUMNS[1:])] for r in rows])


def parse_cap(value: int | float | None) -> int | None:
    """The cap as the Manage surveys number input gives it: 0 or empty means no cap."""
    if value is None or int(value) == 0:
        return None
    return int(value)


# --------------------------------------------------------------------------------------------- creation


@dataclass
class CreateResult:
    """errors: nothing was created; notes: how the request was met; warnings: what may give the answer away."""

    token: str | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    real: int = 0
    synthetic: int = 0


def _source(file: SourceFile | tuple[str, bytes]) -> SourceFile:
    """A gathered file; a bare (name, bytes) pair is taken as an upload of that name."""
    if isinstance(file, SourceFile):
        return file
    name, data = file
    return SourceFile(name, data, {"source": FROM_UPLOAD, "file": name})


def _provenance(files: Sequence[SourceFile], images: Sequence[SurveyImage]) -> list[dict]:
    """Each file's provenance with what it was before normalisation (native size, format, mode, profile)."""
    return [
        {**f.provenance, "native": i.native.as_dict() if i.native else None} for f, i in zip(files, images, strict=True)
    ]


def _pick(files: list[SourceFile], n: int, what: str, notes: list[str]) -> list[SourceFile]:
    if len(files) > n:
        notes.append(f"{len(files)} {what} images given; a random {n} of them are used.")
        return random.SystemRandom().sample(files, n)
    if len(files) < n:
        notes.append(f"Only {len(files)} {what} images given (asked for {n}); all of them are used.")
    return files


def create_survey_from_files(
    title: str,
    real_files: Sequence[SourceFile | tuple[str, bytes]],
    synthetic_files: Sequence[SourceFile | tuple[str, bytes]],
    *,
    n_real: int,
    n_synthetic: int,
    size: int,
    max_upload_mb: int,
    open_now: bool = True,
    allow_upscale: bool = False,
    source_errors: Sequence[str] = (),
) -> CreateResult:
    """Check, normalise and store both halves as a new survey; all errors at once, nothing stored on error.

    Images smaller than `size` are refused unless `allow_upscale`. The survey is created despite warnings
    (the halves' native properties differ, an image was up-scaled, a colour profile could not be converted):
    the page shows them at creation.
    """
    result = CreateResult(errors=list(source_errors))
    if not str(title or "").strip():
        result.errors.append("Give the survey a title.")
    if not real_files:
        result.errors.append("No real images: upload some or choose a folder.")
    if not synthetic_files:
        result.errors.append("No synthetic images: upload some, choose Library samples or a folder.")
    if result.errors:
        return result
    real_files = _pick([_source(f) for f in real_files], n_real, "real", result.notes)
    synthetic_files = _pick([_source(f) for f in synthetic_files], n_synthetic, "synthetic", result.notes)
    options = {
        "max_bytes": int(max_upload_mb) * 1024 * 1024,
        "max_pixels": DEFAULT_MAX_PIXELS,
        "allow_upscale": bool(allow_upscale),
    }
    real, real_errors = normalise_files([(f.name, f.data) for f in real_files], size, **options)
    synthetic, synthetic_errors = normalise_files([(f.name, f.data) for f in synthetic_files], size, **options)
    result.errors += [f"Real image {e}" for e in real_errors] + [f"Synthetic image {e}" for e in synthetic_errors]
    if result.errors:
        result.notes.clear()
        return result
    result.warnings += compare_halves([i.native for i in real], [i.native for i in synthetic])
    result.warnings += [f"Real image {w}" for i in real for w in i.warnings]
    result.warnings += [f"Synthetic image {w}" for i in synthetic for w in i.warnings]
    try:
        result.token = create_image_survey(
            title,
            [i.png for i in real],
            [i.png for i in synthetic],
            status=stats_lib.OPEN if open_now else stats_lib.DRAFT,
            real_provenance=_provenance(real_files, real),
            synthetic_provenance=_provenance(synthetic_files, synthetic),
        )
    except ValueError as exc:
        result.errors.append(str(exc))
        result.warnings.clear()
        return result
    result.real, result.synthetic = len(real), len(synthetic)
    return result


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SurveyData:
    """A survey's answers as statistics records, with its answer key and items by question id.

    records holds the answers of the INCLUDED participants only: every statistic and export built from it
    leaves the excluded ones out by construction. participants lists everyone (the exclude toggles);
    strategies maps each included participant's id (as in records) to their strategy text.
    """

    records: list[stats_lib.SurveyAnswer]
    answer_key: dict[str, str]
    items: dict[str, repo.SurveyItem]
    participants: tuple[repo.SurveyParticipant, ...] = ()
    strategies: dict[str, str | None] = field(default_factory=dict)

    @property
    def excluded(self) -> int:
        """How many participants the researcher excluded."""
        return sum(p.excluded for p in self.participants)


def survey_data(survey_id: int) -> SurveyData:
    items = {str(i.position + 1): i for i in repo.survey_items_with_truth(survey_id)}
    participants = tuple(repo.survey_participants(survey_id))
    every = [
        stats_lib.SurveyAnswer(str(a.participant_id), a.experience, str(a.question), a.truth, a.answer)
        for a in repo.survey_answers(survey_id)
    ]
    records, _ = stats_lib.exclude_participants(every, [p.id for p in participants if p.excluded])
    strategies = {str(p.id): p.strategy for p in participants if not p.excluded}
    return SurveyData(records, {q: i.truth for q, i in items.items()}, items, participants, strategies)


def answers_csv(data: SurveyData) -> str:
    """The raw answers download: included participants only, with their strategy column, cells neutralised."""
    return stats_lib.responses_csv(data.records, data.strategies)


def summary_csv(stats: stats_lib.SurveyStats, data: SurveyData) -> str:
    """The per-participant summary download, with each participant's strategy, cells neutralised."""
    return stats_lib.summary_csv(stats, data.strategies)


def strategy_rows(stats: stats_lib.SurveyStats | None, data: SurveyData) -> list[dict]:
    """The included participants who wrote a strategy: their text beside their experience and kappa."""
    kappas = {p.id: p.kappa for p in stats.participants} if stats else {}
    return [
        {
            "participant": str(p.id),
            "experience": p.experience,
            "kappa": _r(kappas.get(str(p.id)), 4),
            "strategy": p.strategy,
        }
        for p in data.participants
        if not p.excluded and p.strategy
    ]


def exclusion_label(participant: repo.SurveyParticipant) -> str:
    """How a participant's exclude toggle reads: id, experience, progress."""
    experience = "experience not given" if participant.experience is None else f"experience {participant.experience}"
    state = "finished" if participant.finished_at else "not finished"
    return f"Participant {participant.id} ({experience}, {participant.answered} answers, {state})"


def set_excluded(survey_id: int, participant_id: int, excluded: bool) -> None:
    repo.set_participant_excluded(survey_id, participant_id, excluded)


def statistics(data: SurveyData, bootstrap: int = 2000) -> stats_lib.SurveyStats | None:
    """The survey statistics, or None when nobody has answered yet."""
    if not data.records:
        return None
    return stats_lib.survey_statistics(data.records, answer_key=data.answer_key, bootstrap=bootstrap)


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def participant_rows(stats: stats_lib.SurveyStats) -> list[dict]:
    return [
        {
            "participant": p.id,
            "experience": p.experience,
            "answered": p.answered,
            "correct": p.correct,
            "accuracy": _r(p.accuracy),
            "kappa": _r(p.kappa, 4),
            "binomial p": _r(p.binomial_p, 4),
        }
        for p in stats.participants
    ]


def experience_rows(stats: stats_lib.SurveyStats) -> list[dict]:
    return [
        {
            "experience": g.label,
            "participants": g.participants,
            "with kappa": g.with_kappa,
            "mean kappa": _r(g.mean_kappa, 4),
        }
        for g in stats.experience_groups
    ]


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def question_rows(stats: stats_lib.SurveyStats, data: SurveyData, thumbnails: bool = True) -> list[dict]:
    rows = []
    for q in stats.questions:
        item = data.items.get(q.question)
        row = {
            "question": int(q.question) if q.question.isdigit() else q.question,
            "truth": q.truth,
            "answered": q.answered,
            "correct": q.correct,
            "accuracy": _r(q.accuracy),
            "majority": q.majority or ("tie" if q.answered else "-"),
        }
        if thumbnails:
            row = {"image": data_url(thumbnail_png(item.image_path, 64)) if item else None, **row}
        rows.append(row)
    return rows


HEATMAP_CORRECT, HEATMAP_WRONG, HEATMAP_MISSING = "correct", "incorrect", "unanswered"


def heatmap_rows(stats: stats_lib.SurveyStats) -> list[dict]:
    """One row per (question, participant) cell of the correctness matrix, for an Altair rect chart."""
    rows = []
    for qi, q in enumerate(stats.questions):
        for pi, p in enumerate(stats.participants):
            value = stats.correctness[qi][pi]
            rows.append(
                {
                    "question": f"Q{q.question} ({q.truth})",
                    "order": qi,
                    "participant": p.id,
                    "result": HEATMAP_MISSING if value is None else (HEATMAP_CORRECT if value else HEATMAP_WRONG),
                }
            )
    return rows


def fooling_images(stats: stats_lib.SurveyStats, data: SurveyData) -> list[tuple[str, stats_lib.QuestionStats, bytes]]:
    """(caption, question, PNG) of the synthetic image most taken for real and the real most taken for synthetic."""
    out = []
    for truth, taken_for in ((stats_lib.SYNTHETIC, stats_lib.REAL), (stats_lib.REAL, stats_lib.SYNTHETIC)):
        for q in stats_lib.most_fooling(stats, truth):
            item = data.items.get(q.question)
            if item is not None:
                caption = (
                    f"{truth.capitalize()} image most often taken for {taken_for}: question {q.question}, "
                    f"{q.answered - q.correct} of {q.answered} fooled"
                )
                out.append((caption, q, read_image_bytes(item.image_path)))
    return out


# ------------------------------------------------------------------------------------------ CSV import


@dataclass
class ImportOutcome:
    imported: repo.ImportSummary | None = None
    problems: list[str] = field(default_factory=list)
    skipped_blank_answers: int = 0


_QUESTION_NUMBER = re.compile(r"^(?:q(?:uestion)?\s*)?(\d+)$", re.IGNORECASE)


def listed_problems(error: stats_lib.ResponsesCSVError) -> list[str]:
    """The reader's problems as the page lists them: 'line N: problem', the first MAX_LISTED_PROBLEMS, then a count."""
    shown = [f"line {line}: {problem}" for line, problem in error.problems[: stats_lib.MAX_LISTED_PROBLEMS]]
    more = len(error.problems) - len(shown)
    return shown + ([f"... and {more} more problems"] if more else [])


def question_ref(question: str) -> int | str:
    """'9', 'q9', 'Q9', 'question 9' -> 9 (the 1-based position); anything else is an item's public id."""
    match = _QUESTION_NUMBER.match(question.strip())
    return int(match.group(1)) if match else question.strip()


def import_csv(survey_id: int, data: bytes | str) -> ImportOutcome:
    """Import a participant,experience,question,truth,answer CSV as the survey's responses, all or nothing.

    Problems are listed by file line (the header is line 1): format errors first (renal_ldm.survey), then rows
    that do not fit this survey (unknown question, truth disagreeing with the item). Rows with an empty answer
    (a question shown but skipped) are not stored; the repository stores given answers only.
    """
    outcome = ImportOutcome()
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        outcome.problems.append(f"the file is not UTF-8 text ({exc}); expected a CSV file")
        return outcome
    try:
        numbered = stats_lib.read_numbered_responses(text if ("\n" in text or "\r" in text) else text + "\n")
    except stats_lib.ResponsesCSVError as exc:
        outcome.problems = listed_problems(exc)
        return outcome
    except ValueError as exc:  # no header, or a header without the columns: one message for the whole file
        outcome.problems = [str(exc)]
        return outcome
    if not numbered:
        outcome.problems.append("the file has a header but no rows; nothing to import")
        return outcome
    items = repo.survey_items_with_truth(survey_id)
    by_position = {i.position + 1: i for i in items}
    by_public = {i.public_id: i for i in items}
    rows = []
    for line, rec in numbered:
        ref = question_ref(rec.question)
        item = by_position.get(ref) if isinstance(ref, int) else by_public.get(ref)
        if item is None:
            outcome.problems.append(
                f"line {line}: question {rec.question!r} is not in this survey (expected 1..{len(items)})"
            )
            continue
        if rec.truth != item.truth:
            outcome.problems.append(
                f"line {line}: truth {rec.truth!r} disagrees with question {rec.question} "
                f"of this survey ({item.truth!r}); is the file for another survey?"
            )
            continue
        if rec.answer is None:
            outcome.skipped_blank_answers += 1
            continue
        rows.append(
            {
                "participant": rec.participant,
                "experience": rec.experience,
                "question": item.position + 1,
                "truth": rec.truth,
                "answer": rec.answer,
            }
        )
    if outcome.problems:
        return outcome
    if not rows:
        outcome.problems.append("every row has an empty answer; nothing to import")
        return outcome
    try:
        outcome.imported = repo.import_responses(survey_id, rows)
    except ValueError as exc:
        outcome.problems.append(str(exc))
    return outcome
