"""Agreement statistics of the blind real-vs-synthetic survey (reference study, sections 4.2.2 and 5.2).

Pure functions over answer records: no Streamlit, no database. The web results page and `renal-ldm
survey-stats` both call `survey_statistics`, so the numbers a researcher reads are the same everywhere.

The survey's vocabulary lives here too, defined once for the database models (db.models), the pages and the
statistics: the answer labels, the survey statuses, the experience scale and the text limits. It is cheap to
import (scipy and scikit-learn are imported only when a statistic is computed), so db.models can import it.

Each participant is one rater and the ground truth the other: a participant's Cohen's kappa against the truth
is 1 for a perfect score, 0 for chance, -1 for every answer wrong. Degenerate inputs have defined results
(documented where they arise) and never produce NaN: an undefined number is None, and JSON shows it as null.

Questions and participants are ordered naturally ("q2" before "q10", "2" before "10") so tables, CSV files
and heatmaps come out the same whatever order the answers were stored in.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from renal_ldm.csv_cells import csv_text, restore_cell

# -------------------------------------------------------------------------------------------------- vocabulary

REAL = "real"
SYNTHETIC = "synthetic"
LABELS = (REAL, SYNTHETIC)
"""The truth of an item and a participant's answer, as stored and as written in CSV files."""
ANSWER_TEXTS = {REAL: "Real", SYNTHETIC: "Synthetic"}
"""What the participant's two answer buttons say."""

DRAFT, OPEN, CLOSED = "draft", "open", "closed"
STATUSES = (DRAFT, OPEN, CLOSED)
"""A survey's life: a draft takes no participants yet, an open one does, a closed one no longer does."""

EXPERIENCE_MIN, EXPERIENCE_MAX = 1, 5
EXPERIENCE_LEVELS = tuple(range(EXPERIENCE_MIN, EXPERIENCE_MAX + 1))
EXPERIENCE_ENDS = {EXPERIENCE_MIN: "Barely any experience", EXPERIENCE_MAX: "Pathologist"}
"""The self-rated experience scale: only its two ends are named."""
# The reference study's two experience groups (section 5.2): "1 or 2" and "at least 3".
EXPERIENCE_GROUPS = (("1-2", (1, 2)), (">=3", (3, 4, 5)))

TITLE_MAX_CHARS = 200
"""A survey title (the database column is this wide)."""
STRATEGY_MAX_CHARS = 10_000
"""A participant's optional free-text strategy (a Text column: the repository enforces this limit)."""
INVITATIONS_PER_BATCH_MAX = 1000
"""One-use invitation links a researcher creates at once (Manage surveys and the repository)."""

CSV_COLUMNS = ("participant", "experience", "question", "truth", "answer")
STRATEGY_COLUMN = "strategy"
"""The optional trailing column of the raw-answers export: the participant's strategy (the reader ignores it)."""
MAX_LISTED_PROBLEMS = 25


def experience_label(level: int) -> str:
    """'1 - Barely any experience', '2', ..., '5 - Pathologist': how the scale reads on the participant page."""
    end = EXPERIENCE_ENDS.get(level)
    return f"{level} - {end}" if end else str(level)


class ResponsesCSVError(ValueError):
    """The rows of a responses CSV have problems; `problems` holds every one as (file line number, problem).

    str() is the one message listing them (at most MAX_LISTED_PROBLEMS, then a count), as the CLI prints it;
    the app lists `problems` itself instead of parsing that text.
    """

    def __init__(self, message: str, problems: Sequence[tuple[int, str]]) -> None:
        super().__init__(message)
        self.problems: list[tuple[int, str]] = list(problems)


# --------------------------------------------------------------------------------------------------- records


def parse_label(value: object, *, field: str = "label") -> str:
    """'Real', ' SYNTHETIC ' -> 'real', 'synthetic'; anything else is a user error naming the value."""
    text = str(value).strip().casefold() if value is not None else ""
    if text not in LABELS:
        raise ValueError(f"{field} {value!r} is not 'real' or 'synthetic'")
    return text


def parse_experience(value: object) -> int | None:
    """Self-rated experience 1 ('Barely any experience') .. 5 ('Pathologist'); None or '' means not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    bad = f"experience {value!r} is not an integer {EXPERIENCE_MIN}..{EXPERIENCE_MAX}"
    if isinstance(value, bool):
        raise ValueError(bad)
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(bad)
        value = int(text)
    if not isinstance(value, (int, np.integer)) or not EXPERIENCE_MIN <= int(value) <= EXPERIENCE_MAX:
        raise ValueError(bad)
    return int(value)


def _parse_id(value: object, field: str) -> str:
    """Ids are strings (database keys arrive as ints); blank ids cannot be told apart, so they are refused."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise ValueError(f"{field} id is empty")
    return text


@dataclass(frozen=True)
class SurveyAnswer:
    """One participant's answer to one question. `answer` None: the question was shown but skipped.

    Values are normalised on construction ('Real ' -> 'real', experience '3' -> 3), so records built from a
    CSV file, a database row or Python literals compare equal.
    """

    participant: str
    experience: int | None
    question: str
    truth: str
    answer: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "participant", _parse_id(self.participant, "participant"))
        object.__setattr__(self, "question", _parse_id(self.question, "question"))
        object.__setattr__(self, "experience", parse_experience(self.experience))
        object.__setattr__(self, "truth", parse_label(self.truth, field="truth"))
        if self.answer is not None and not (isinstance(self.answer, str) and not self.answer.strip()):
            object.__setattr__(self, "answer", parse_label(self.answer, field="answer"))
        else:
            object.__setattr__(self, "answer", None)

    @property
    def correct(self) -> bool | None:
        """None for a skipped question: neither right nor wrong."""
        return None if self.answer is None else self.answer == self.truth


def natural_key(text: str) -> tuple:
    """Sort key putting 'q2' before 'q10' and '2' before '10'; the raw text breaks remaining ties."""
    parts = re.split(r"(\d+)", text)
    key = tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))
    return (key, text)


def _consistency_problems(records: Sequence[SurveyAnswer], where: Callable[[int], str]) -> list[tuple[int, str]]:
    """Duplicate answers, a question with two truths, a participant with two experience values.

    `where(i)` names record i ("line 7", "record 3") so the message points at both conflicting places.
    """
    problems: list[tuple[int, str]] = []
    seen_answer: dict[tuple[str, str], int] = {}
    seen_truth: dict[str, int] = {}
    seen_experience: dict[str, int] = {}
    for i, rec in enumerate(records):
        key = (rec.participant, rec.question)
        if key in seen_answer:
            problems.append(
                (
                    i,
                    f"participant {rec.participant!r} answers question {rec.question!r} again "
                    f"(first on {where(seen_answer[key])})",
                )
            )
            continue
        seen_answer[key] = i
        first = seen_truth.setdefault(rec.question, i)
        if records[first].truth != rec.truth:
            problems.append(
                (
                    i,
                    f"question {rec.question!r} has truth {rec.truth!r} here but "
                    f"{records[first].truth!r} on {where(first)}",
                )
            )
        first = seen_experience.setdefault(rec.participant, i)
        if records[first].experience != rec.experience:
            problems.append(
                (
                    i,
                    f"participant {rec.participant!r} has experience {_show(rec.experience)} here "
                    f"but {_show(records[first].experience)} on {where(first)}",
                )
            )
    return problems


def _show(experience: int | None) -> str:
    return "(empty)" if experience is None else str(experience)


def problems_message(problems: Sequence[str], intro: str) -> str:
    """All problems in one message, so a user fixes a file in one pass instead of one error per run."""
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"; and {more} more" if more else ""
    return f"{intro}: {len(problems)} problem(s): " + "; ".join(shown) + tail


def validate_records(records: Iterable[SurveyAnswer]) -> tuple[SurveyAnswer, ...]:
    """The records as a tuple, or one ValueError listing every inconsistency (0-based record numbers)."""
    recs = tuple(records)
    for i, rec in enumerate(recs):
        if not isinstance(rec, SurveyAnswer):
            raise ValueError(f"record {i} is a {type(rec).__name__}, expected SurveyAnswer")
    problems = _consistency_problems(recs, lambda i: f"record {i}")
    if problems:
        raise ValueError(problems_message([f"record {i}: {msg}" for i, msg in problems], "inconsistent survey answers"))
    return recs


# ------------------------------------------------------------------------------------------------------ CSV


def _read_text(source: str | os.PathLike | bytes | IO) -> str:
    """CSV text from a path, raw text (a str holding a line break), bytes, or an open file (e.g. an upload).

    A UTF-8 byte order mark is dropped; line endings are left to the csv module, which reads CRLF and LF.
    """
    if hasattr(source, "read"):
        source = source.read()
    if isinstance(source, bytes):
        text = source.decode("utf-8-sig")
    elif isinstance(source, str) and ("\n" in source or "\r" in source):
        text = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise ValueError(f"survey responses {str(path)!r} is a folder; expected a CSV file")
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"survey responses {str(path)!r} is not UTF-8 text ({exc}); expected a CSV file") from None
    else:
        raise ValueError(f"cannot read survey responses from a {type(source).__name__}")
    return text.removeprefix("\ufeff")


def _header_columns(header: list[str]) -> dict[str, int]:
    """Column name -> index; names are matched ignoring case and surrounding spaces."""
    names = [h.strip().casefold() for h in header]
    duplicated = sorted({n for n in names if n in CSV_COLUMNS and names.count(n) > 1})
    if duplicated:
        raise ValueError(f"survey responses CSV: header repeats column(s) {', '.join(duplicated)}")
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"survey responses CSV: header lacks column(s) {', '.join(missing)}; "
            f"expected {','.join(CSV_COLUMNS)} (any order, extra columns ignored), got {','.join(header)}"
        )
    return {c: names.index(c) for c in CSV_COLUMNS}


def _row_to_record(row: list[str], columns: dict[str, int], width: int) -> SurveyAnswer:
    """One data row as a record; ValueError names every bad cell of the row."""
    if len(row) > width:
        raise ValueError(f"{len(row)} fields but the header has {width}")
    cells = {c: (row[i] if i < len(row) else None) for c, i in columns.items()}
    absent = [c for c, v in cells.items() if v is None]
    if absent:
        raise ValueError(f"missing value(s) for {', '.join(absent)}")
    errors = []
    for field, check in (
        ("participant", lambda v: _parse_id(v, "participant")),
        ("question", lambda v: _parse_id(v, "question")),
        ("experience", parse_experience),
        ("truth", lambda v: parse_label(v, field="truth")),
        ("answer", lambda v: v.strip() and parse_label(v, field="answer")),
    ):
        try:
            check(cells[field])
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ValueError(", ".join(errors))
    return SurveyAnswer(
        cells["participant"], cells["experience"], cells["question"], cells["truth"], cells["answer"] or None
    )


def read_responses_csv(source: str | os.PathLike | bytes | IO) -> list[SurveyAnswer]:
    """Survey answers from CSV with columns participant,experience,question,truth,answer.

    `source` is a path, CSV text (a str containing a line break), bytes or an open file. The header is
    required; column order is free and extra columns are ignored. Empty experience means not given; an empty
    answer means the question was shown but skipped. Problems in the rows are reported all at once, in one
    ResponsesCSVError, by FILE LINE NUMBER (the header is line 1); a missing or wrong header is a ValueError.
    Nothing is returned unless the whole file is valid. Blank lines are skipped. A header with no data rows
    gives an empty list.
    """
    return [record for _line, record in read_numbered_responses(source)]


def read_numbered_responses(source: str | os.PathLike | bytes | IO) -> list[tuple[int, SurveyAnswer]]:
    """(file line number, answer) of every data row, as `read_responses_csv` reads them (same errors)."""
    reader = csv.reader(io.StringIO(_read_text(source), newline=""))
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):
        header = next(reader, None)
    if header is None:
        raise ValueError("survey responses CSV is empty; expected a header " + ",".join(CSV_COLUMNS))
    header = [restore_cell(h) for h in header]  # the product's own exports neutralise formula-like cells
    columns = _header_columns(header)
    records: list[SurveyAnswer] = []
    lines: list[int] = []
    problems: list[tuple[int, str]] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            try:
                records.append(_row_to_record([restore_cell(c) for c in row], columns, len(header)))
                lines.append(reader.line_num)
            except ValueError as exc:
                problems.append((reader.line_num, str(exc)))
    except csv.Error as exc:
        problems.append((reader.line_num, str(exc)))
    problems += [(lines[i], msg) for i, msg in _consistency_problems(records, lambda i: f"line {lines[i]}")]
    if problems:
        problems.sort(key=lambda problem: problem[0])
        message = problems_message(
            [f"line {line}: {msg}" for line, msg in problems],
            "survey responses CSV (line numbers count the header as line 1)",
        )
        raise ResponsesCSVError(message, problems)
    return list(zip(lines, records, strict=True))


def responses_csv(records: Iterable[SurveyAnswer], strategies: Mapping[str, str | None] | None = None) -> str:
    """The raw answers as CSV text in the input format (reads back with read_responses_csv), for downloads.

    With `strategies` (participant -> strategy text), a trailing `strategy` column repeats each participant's
    strategy on their rows, as experience is repeated; the reader ignores it. Every cell is neutralised
    (renal_ldm.csv_cells): a strategy or label such as `=HYPERLINK(...)` never runs in a spreadsheet.
    """
    header = CSV_COLUMNS + ((STRATEGY_COLUMN,) if strategies is not None else ())
    rows = []
    for r in records:
        row = [r.participant, "" if r.experience is None else r.experience, r.question, r.truth, r.answer or ""]
        if strategies is not None:
            row.append(strategies.get(r.participant) or "")
        rows.append(row)
    return csv_text(header, rows)


# ------------------------------------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class ParticipantStats:
    """One rater against the truth. kappa None: undefined (see `participant_kappa`); p None: nothing answered."""

    id: str
    experience: int | None
    answered: int
    correct: int
    accuracy: float | None
    kappa: float | None
    binomial_p: float | None


@dataclass(frozen=True)
class QuestionStats:
    """How one image fared: `answered - correct` participants were fooled by it.

    majority: the answer most participants gave, None on a tie or when nobody answered.
    majority_correct: None when nobody answered; a tie counts as not correct (False).
    """

    question: str
    truth: str
    answered: int
    correct: int
    accuracy: float | None
    majority: str | None
    majority_correct: bool | None


@dataclass(frozen=True)
class ExperienceGroup:
    """Mean kappa of the participants whose experience is in `levels` (None when none has a defined kappa)."""

    label: str
    levels: tuple[int, ...]
    participants: int
    with_kappa: int
    mean_kappa: float | None


@dataclass(frozen=True)
class SurveyStats:
    """Everything the results page and the CLI show. Floats are raw; `to_json_dict` rounds them for display.

    correctness[q][p] is True/False/None (unanswered) for questions[q] and participants[p], for a heatmap.
    """

    participants: tuple[ParticipantStats, ...]
    questions: tuple[QuestionStats, ...]
    correctness: tuple[tuple[bool | None, ...], ...]
    mean_kappa: float | None
    min_kappa: float | None
    max_kappa: float | None
    kappa_ci95: tuple[float, float] | None
    bootstrap: int
    seed: int
    mean_correct: float
    mean_accuracy: float | None
    experience_groups: tuple[ExperienceGroup, ...]
    majority_vote_correct: int
    majority_vote_questions: int
    majority_vote_ties: int
    fleiss_kappa: float | None
    fleiss_questions: int
    pooled_answered: int
    pooled_correct: int
    pooled_binomial_p: float | None
    excluded_participants: int = 0
    """Participants with answers that a researcher left out (survey_statistics' `exclude`): in nothing above."""

    @property
    def mean_kappa_by_experience(self) -> dict[str, float | None]:
        """'1-2' and '>=3' always (None when empty), then the levels '1'..'5' that have participants."""
        return {g.label: g.mean_kappa for g in self.experience_groups}

    def participant(self, participant_id: str) -> ParticipantStats:
        for p in self.participants:
            if p.id == participant_id:
                return p
        raise KeyError(participant_id)

    def question(self, question_id: str) -> QuestionStats:
        for q in self.questions:
            if q.question == question_id:
                return q
        raise KeyError(question_id)

    def to_json_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready dict (no NaN, no numpy types); statistics rounded to 6 decimals, p-values to 6
        significant digits."""
        return {
            "participants": [_participant_json(p) for p in self.participants],
            "mean_kappa": _r(self.mean_kappa),
            "min_kappa": _r(self.min_kappa),
            "max_kappa": _r(self.max_kappa),
            "mean_correct": _r(self.mean_correct),
            "majority_vote_correct": self.majority_vote_correct,
            "questions": [_question_json(q) for q in self.questions],
            "n_participants": len(self.participants),
            "n_questions": len(self.questions),
            "mean_accuracy": _r(self.mean_accuracy),
            "kappa_ci95": None if self.kappa_ci95 is None else [_r(v) for v in self.kappa_ci95],
            "kappa_ci95_bootstrap": self.bootstrap,
            "kappa_ci95_seed": self.seed,
            "mean_kappa_by_experience": {k: _r(v) for k, v in self.mean_kappa_by_experience.items()},
            "experience_groups": [
                {
                    "label": g.label,
                    "levels": list(g.levels),
                    "participants": g.participants,
                    "with_kappa": g.with_kappa,
                    "mean_kappa": _r(g.mean_kappa),
                }
                for g in self.experience_groups
            ],
            "majority_vote_questions": self.majority_vote_questions,
            "majority_vote_ties": self.majority_vote_ties,
            "fleiss_kappa": _r(self.fleiss_kappa),
            "fleiss_questions": self.fleiss_questions,
            "pooled_answered": self.pooled_answered,
            "pooled_correct": self.pooled_correct,
            "pooled_binomial_p": _sig(self.pooled_binomial_p),
            "excluded_participants": self.excluded_participants,
            "correctness_matrix": {
                "questions": [q.question for q in self.questions],
                "participants": [p.id for p in self.participants],
                "correct": [list(row) for row in self.correctness],
            },
        }


def _participant_json(p: ParticipantStats) -> dict[str, Any]:
    return {
        "id": p.id,
        "experience": p.experience,
        "answered": p.answered,
        "correct": p.correct,
        "accuracy": _r(p.accuracy),
        "kappa": _r(p.kappa),
        "binomial_p": _sig(p.binomial_p),
    }


def _question_json(q: QuestionStats) -> dict[str, Any]:
    return {
        "question": q.question,
        "truth": q.truth,
        "answered": q.answered,
        "correct": q.correct,
        "accuracy": _r(q.accuracy),
        "majority": q.majority,
        "majority_correct": q.majority_correct,
    }


def _r(x: float | None) -> float | None:
    """6 decimals, -0.0 as 0.0, and never NaN/inf (those would be a bug upstream: fail loudly)."""
    if x is None:
        return None
    if not math.isfinite(x):
        raise ValueError(f"non-finite statistic {x!r}")
    return round(float(x), 6) + 0.0


def _sig(x: float | None) -> float | None:
    """6 significant digits: keeps tiny p-values readable instead of rounding them to 0."""
    if x is None:
        return None
    if not math.isfinite(x):
        raise ValueError(f"non-finite statistic {x!r}")
    return float(f"{float(x):.6g}") + 0.0


def participant_kappa(truths: Sequence[str], answers: Sequence[str]) -> float | None:
    """Cohen's kappa of one participant against the truth, over the questions they answered.

    Defined cases follow sklearn.metrics.cohen_kappa_score: answering everything the same while the truth
    varies gives 0.0 (agreement exactly at chance: the answers carry no information about the truth), and so
    does a constant truth with varying answers. Kappa is undefined (0/0) when the truth AND the answers are
    one and the same single label, or nothing was answered: the participant was never asked to tell the two
    classes apart, so no agreement beyond chance can be measured. That returns None, and such a participant is
    left out of every kappa summary (mean, min, max, CI, experience groups) but still counts in accuracy,
    mean correct, majority vote and the binomial tests.
    """
    if not answers or len(set(truths) | set(answers)) == 1:
        return None
    from sklearn.metrics import cohen_kappa_score  # imported when needed: the vocabulary above stays light

    return float(cohen_kappa_score(list(truths), list(answers), labels=list(LABELS)))


def binomial_p(correct: int, answered: int) -> float | None:
    """Two-sided exact binomial test of `correct` out of `answered` against guessing (p = 0.5)."""
    if answered == 0:
        return None
    from scipy.stats import binomtest  # imported when needed: the vocabulary above stays light

    return float(binomtest(correct, answered, 0.5, alternative="two-sided").pvalue)


def bootstrap_mean_ci(values: Sequence[float], *, n: int, seed: int, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean, resampling participants with replacement (seeded, reproducible).

    None with fewer than 2 values (one participant's kappa has no spread to resample) or when n is 0.
    """
    if n < 0:
        raise ValueError(f"bootstrap resamples {n} must be >= 0")
    if n == 0 or len(values) < 2:
        return None
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n, len(arr)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa from an items x categories count matrix with the same number of raters on every item.

    None when undefined: fewer than 2 raters, no items, or every answer in one category (chance agreement 1).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return None
    raters = counts.sum(axis=1)
    if raters[0] < 2 or not np.all(raters == raters[0]):
        return None
    n = raters[0]
    p_j = counts.sum(axis=0) / counts.sum()
    p_e = float(np.sum(p_j**2))
    if p_e >= 1.0 - 1e-12:
        return None
    p_i = (np.sum(counts**2, axis=1) - n) / (n * (n - 1))
    return float((p_i.mean() - p_e) / (1.0 - p_e))


def _participant_stats(pid: str, recs: list[SurveyAnswer]) -> ParticipantStats:
    given = [r for r in recs if r.answer is not None]
    correct = sum(r.answer == r.truth for r in given)
    return ParticipantStats(
        id=pid,
        experience=recs[0].experience,
        answered=len(given),
        correct=correct,
        accuracy=correct / len(given) if given else None,
        kappa=participant_kappa([r.truth for r in given], [r.answer for r in given]),
        binomial_p=binomial_p(correct, len(given)),
    )


def _question_stats(qid: str, truth: str, answers: list[str]) -> QuestionStats:
    votes = Counter(answers)
    correct = votes[truth]
    wrong = len(answers) - correct
    majority = None if correct == wrong else (truth if correct > wrong else _other(truth))
    return QuestionStats(
        question=qid,
        truth=truth,
        answered=len(answers),
        correct=correct,
        accuracy=correct / len(answers) if answers else None,
        majority=majority,
        majority_correct=(correct > wrong) if answers else None,
    )


def _other(label: str) -> str:
    return SYNTHETIC if label == REAL else REAL


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _experience_groups(participants: Sequence[ParticipantStats]) -> tuple[ExperienceGroup, ...]:
    """The study's '1-2' and '>=3' groups (always listed), then each level 1..5 that has participants.

    Participants without a stated experience belong to no group.
    """
    present = sorted({p.experience for p in participants if p.experience is not None})
    specs = list(EXPERIENCE_GROUPS) + [(str(level), (level,)) for level in present]
    groups = []
    for label, levels in specs:
        members = [p for p in participants if p.experience in levels]
        kappas = [p.kappa for p in members if p.kappa is not None]
        groups.append(ExperienceGroup(label, tuple(levels), len(members), len(kappas), _mean(kappas)))
    return tuple(groups)


def _fleiss(
    participants: Sequence[str], questions: Sequence[str], answers: Mapping[tuple[str, str], str]
) -> tuple[float | None, int]:
    """Fleiss' kappa among the participants who answered anything, over the questions ALL of them answered.

    Fleiss' kappa needs the same raters on every item, so questions someone skipped are left out (the count
    used is returned). None when fewer than 2 such participants, no question answered by all, or every one
    of those answers is the same label.
    """
    raters = [p for p in participants if any((p, q) in answers for q in questions)]
    complete = [q for q in questions if all((p, q) in answers for p in raters)]
    if len(raters) < 2:
        return None, 0
    if not complete:
        return None, 0
    counts = np.array([[sum(answers[(p, q)] == label for p in raters) for label in LABELS] for q in complete])
    return fleiss_kappa(counts), len(complete)


def exclude_participants(records: Iterable[SurveyAnswer], excluded: Iterable[object]) -> tuple[list[SurveyAnswer], int]:
    """The records of everyone but the `excluded` participants (ids compared as text), and how many of the
    excluded had records: the one filter behind the statistics and the exports, so both leave out the same people.
    """
    left_out = {_parse_id(p, "participant") for p in excluded}
    kept, dropped = [], set()
    for r in records:
        if r.participant in left_out:
            dropped.add(r.participant)
        else:
            kept.append(r)
    return kept, len(dropped)


def survey_statistics(
    records: Iterable[SurveyAnswer],
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    answer_key: Mapping[str, str] | None = None,
    exclude: Iterable[object] = (),
) -> SurveyStats:
    """All survey statistics from answer records (see the module docstring for the conventions).

    `exclude` lists participants a researcher left out: their answers count in no statistic (kappa, Fleiss,
    majority vote, binomial tests, per-question counts), and `excluded_participants` says how many had answers.

    `answer_key` (question -> truth), optional, lists questions that may have no answers at all (shown as
    answered 0, correct 0, left out of the majority vote); it must agree with the records' truths.
    Majority vote: a question counts as correct when strictly more participants answered it right than wrong;
    a tie counts as not correct, and unanswered questions are left out (majority_vote_questions counts the
    rest). The pooled binomial test treats every answer as independent, which answers by the same person are
    not: read it as descriptive. Raises ValueError for no records (after exclusion) or inconsistent records.
    """
    kept, n_excluded = exclude_participants(validate_records(records), exclude)
    recs = tuple(kept)
    if not recs:
        raise ValueError(
            "no survey answers: need at least one participant's answers to compute statistics"
            + (f" ({n_excluded} participants excluded)" if n_excluded else "")
        )
    truths = _truths(recs, answer_key)
    questions = sorted(truths, key=natural_key)
    by_participant: dict[str, list[SurveyAnswer]] = {}
    for r in recs:
        by_participant.setdefault(r.participant, []).append(r)
    pids = sorted(by_participant, key=natural_key)
    answers = {(r.participant, r.question): r.answer for r in recs if r.answer is not None}

    parts = tuple(_participant_stats(p, by_participant[p]) for p in pids)
    qstats = tuple(
        _question_stats(q, truths[q], [answers[(p, q)] for p in pids if (p, q) in answers]) for q in questions
    )
    correctness = tuple(
        tuple(None if (p, q) not in answers else answers[(p, q)] == truths[q] for p in pids) for q in questions
    )
    kappas = [p.kappa for p in parts if p.kappa is not None]
    fleiss, fleiss_n = _fleiss(pids, questions, answers)
    pooled_answered = sum(p.answered for p in parts)
    pooled_correct = sum(p.correct for p in parts)
    answered_q = [q for q in qstats if q.answered]
    return SurveyStats(
        participants=parts,
        questions=qstats,
        correctness=correctness,
        mean_kappa=_mean(kappas),
        min_kappa=min(kappas) if kappas else None,
        max_kappa=max(kappas) if kappas else None,
        kappa_ci95=bootstrap_mean_ci(kappas, n=bootstrap, seed=seed),
        bootstrap=bootstrap,
        seed=seed,
        mean_correct=float(np.mean([p.correct for p in parts])),
        mean_accuracy=_mean([p.accuracy for p in parts if p.accuracy is not None]),
        experience_groups=_experience_groups(parts),
        majority_vote_correct=sum(bool(q.majority_correct) for q in answered_q),
        majority_vote_questions=len(answered_q),
        majority_vote_ties=sum(q.majority is None for q in answered_q),
        fleiss_kappa=fleiss,
        fleiss_questions=fleiss_n,
        pooled_answered=pooled_answered,
        pooled_correct=pooled_correct,
        pooled_binomial_p=binomial_p(pooled_correct, pooled_answered),
        excluded_participants=n_excluded,
    )


def _truths(recs: Sequence[SurveyAnswer], answer_key: Mapping[str, str] | None) -> dict[str, str]:
    """question -> truth from the records, merged with the optional answer key (conflicts are errors)."""
    truths = {r.question: r.truth for r in recs}
    for raw_q, raw_truth in (answer_key or {}).items():
        q, truth = _parse_id(raw_q, "question"), parse_label(raw_truth, field="truth")
        if truths.setdefault(q, truth) != truth:
            raise ValueError(f"answer key says question {q!r} is {truth!r} but the answers say {truths[q]!r}")
    return truths


def most_fooling(stats: SurveyStats, truth: str, n: int = 1) -> list[QuestionStats]:
    """The `n` questions of one truth that fooled the most: lowest share correct, then most answers, then id.

    E.g. most_fooling(stats, 'synthetic') is the synthetic image most often taken for real. Unanswered
    questions fooled nobody and are left out.
    """
    truth = parse_label(truth, field="truth")
    pool = [q for q in stats.questions if q.truth == truth and q.answered]
    pool.sort(key=lambda q: (q.correct / q.answered, -q.answered, natural_key(q.question)))
    return pool[:n]


def summary_csv(stats: SurveyStats, strategies: Mapping[str, str | None] | None = None) -> str:
    """Per-participant summary as CSV text (for downloads); undefined values are empty cells, every cell is
    neutralised (renal_ldm.csv_cells). With `strategies`, a trailing `strategy` column."""
    header = ["participant", "experience", "answered", "correct", "accuracy", "kappa", "binomial_p"]
    if strategies is not None:
        header.append(STRATEGY_COLUMN)
    rows = []
    for p in stats.participants:
        row = [
            p.id,
            _cell(p.experience),
            p.answered,
            p.correct,
            _cell(_r(p.accuracy)),
            _cell(_r(p.kappa)),
            _cell(_sig(p.binomial_p)),
        ]
        if strategies is not None:
            row.append(strategies.get(p.id) or "")
        rows.append(row)
    return csv_text(header, rows)


def _cell(value: object) -> object:
    return "" if value is None else value
