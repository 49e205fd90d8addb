"""Survey statistics against hand-computed cases, the CSV format, and `renal-ldm survey-stats`."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from renal_ldm.cli import main
from renal_ldm.survey import (
    MAX_LISTED_PROBLEMS,
    ResponsesCSVError,
    SurveyAnswer,
    bootstrap_mean_ci,
    experience_label,
    fleiss_kappa,
    most_fooling,
    natural_key,
    participant_kappa,
    read_numbered_responses,
    read_responses_csv,
    responses_csv,
    summary_csv,
    survey_statistics,
)

R, S = "real", "synthetic"
BALANCED = [R] * 20 + [S] * 20  # q1..q20 real, q21..q40 synthetic


def flip(label: str) -> str:
    return S if label == R else R


def sheet(pid: str, truths, answers, experience=None, prefix="q") -> list[SurveyAnswer]:
    """One participant's answers; an answer None is a skipped question."""
    pairs = enumerate(zip(truths, answers, strict=True))
    return [SurveyAnswer(pid, experience, f"{prefix}{i + 1}", t, a) for i, (t, a) in pairs]


def stats_of(records, **kw):
    """Statistics with every warning an error: no RuntimeWarning or UndefinedMetricWarning may leak."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return survey_statistics(records, **kw)


def strict_json(stats) -> dict:
    return json.loads(json.dumps(stats.to_json_dict(), allow_nan=False))


# ----------------------------------------------------------------------------------------------- kappa values


def test_all_correct_gives_kappa_one():
    st = stats_of(sheet("p1", BALANCED, BALANCED))
    p = st.participants[0]
    assert (p.answered, p.correct, p.accuracy) == (40, 40, 1.0)
    assert p.kappa == pytest.approx(1.0)


def test_all_wrong_on_balanced_truth_gives_kappa_minus_one():
    st = stats_of(sheet("p1", BALANCED, [flip(t) for t in BALANCED]))
    assert st.participants[0].correct == 0
    assert st.participants[0].kappa == pytest.approx(-1.0)


def test_answers_independent_of_truth_give_kappa_zero():
    # Half of the real and half of the synthetic images answered "real": p_o = p_e = 0.5.
    answers = [R] * 10 + [S] * 10 + [R] * 10 + [S] * 10
    st = stats_of(sheet("p1", BALANCED, answers))
    assert st.participants[0].correct == 20
    assert st.participants[0].kappa == pytest.approx(0.0, abs=1e-12)
    assert st.participants[0].binomial_p == pytest.approx(1.0)


def test_25_of_40_with_even_answer_split_gives_kappa_quarter():
    # 15 real right, 5 wrong; 10 synthetic right, 10 wrong: 20 "real" answers. p_o = 25/40, p_e = 0.5.
    answers = [R] * 15 + [S] * 5 + [R] * 10 + [S] * 10
    p = stats_of(sheet("p1", BALANCED, answers)).participants[0]
    assert p.correct == 25
    assert p.kappa == pytest.approx((25 / 40 - 0.5) / 0.5) == pytest.approx(0.25)


def test_on_balanced_truth_kappa_depends_only_on_correct_count():
    # p_e = 0.5 * P(answer real) + 0.5 * P(answer synthetic) = 0.5 whatever the split: kappa = 2 * acc - 1.
    answers = [R] * 20 + [R] * 5 + [S] * 15  # 35 "real" answers, 35 correct
    assert stats_of(sheet("p1", BALANCED, answers)).participants[0].kappa == pytest.approx(2 * 35 / 40 - 1)


def test_reference_max_kappa_030_with_25_correct_needs_two_skips():
    # The study reports kappa 0.30 for 25 correct. On all 40 images that is impossible (25/40 -> 0.25); with
    # two real images skipped it holds: truth 18 real / 20 synthetic, 8 + 17 correct, 11 "real" answers.
    truths = [R] * 18 + [S] * 20
    answers = [R] * 8 + [S] * 10 + [S] * 17 + [R] * 3
    recs = sheet("p1", truths, answers) + sheet("p1", [R, R], [None, None], prefix="x")
    p = stats_of(recs).participants[0]
    assert (p.answered, p.correct) == (38, 25)
    po, pe = 25 / 38, (18 * 11 + 20 * 27) / 38**2
    assert p.kappa == pytest.approx((po - pe) / (1 - pe)) == pytest.approx(212 / 706)
    assert round(p.kappa, 2) == 0.30


def test_constant_answers_give_kappa_zero():
    p = stats_of(sheet("p1", BALANCED, [R] * 40)).participants[0]
    assert (p.correct, p.kappa) == (20, 0.0)


@pytest.mark.parametrize(
    ("truths", "answers", "expected"),
    [
        ([R, R, R], [R, R, R], None),  # one class seen, all right: 0/0, undefined
        ([S, S], [S, S], None),
        ([R, R, R], [S, S, S], 0.0),  # p_o = p_e = 0
        ([R, R, R], [R, S, R], 0.0),  # constant truth, varying answers: chance by definition
        ([], [], None),
    ],
)
def test_participant_kappa_degenerate_cases(truths, answers, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert participant_kappa(truths, answers) == expected


def test_undefined_kappa_is_none_and_left_out_of_summaries():
    recs = sheet("a", BALANCED, BALANCED, 1)
    recs += sheet("b", BALANCED[:5], BALANCED[:5], 2) + sheet("b", BALANCED[5:], [None] * 35, 2, prefix="z")
    st = stats_of(recs)
    a, b = st.participant("a"), st.participant("b")
    assert a.kappa == pytest.approx(1.0)
    assert b.kappa is None and (b.answered, b.correct, b.accuracy) == (5, 5, 1.0)
    assert st.mean_kappa == st.min_kappa == st.max_kappa == pytest.approx(1.0)
    assert st.mean_kappa_by_experience["1-2"] == pytest.approx(1.0)
    assert st.mean_kappa_by_experience["2"] is None
    assert st.mean_correct == (40 + 5) / 2
    assert st.kappa_ci95 is None  # one defined kappa
    assert strict_json(st)["participants"][1]["kappa"] is None


# --------------------------------------------------------------------------------------------- survey shapes


def test_skipped_questions_are_left_out_of_kappa_and_counts():
    answers = list(BALANCED)
    answers[0] = None
    answers[39] = None
    st = stats_of(sheet("p1", BALANCED, answers) + sheet("p2", BALANCED, BALANCED))
    p1 = st.participant("p1")
    assert (p1.answered, p1.correct) == (38, 38)
    assert p1.kappa == pytest.approx(1.0)
    q1 = st.question("q1")
    assert (q1.answered, q1.correct) == (1, 1)
    assert st.correctness[0] == (None, True)
    assert st.fleiss_questions == 38


def test_single_participant_has_no_ci_and_no_fleiss():
    st = stats_of(sheet("only", BALANCED, BALANCED[::-1]), bootstrap=500)
    assert st.kappa_ci95 is None
    assert st.fleiss_kappa is None and st.fleiss_questions == 0
    assert strict_json(st)["kappa_ci95"] is None


def test_question_nobody_answered():
    recs = sheet("p1", [R, S, S], [R, S, None]) + sheet("p2", [R, S, S], [S, S, None])
    st = stats_of(recs, answer_key={"q4": "Real"})
    for qid in ("q3", "q4"):
        q = st.question(qid)
        assert (q.answered, q.correct, q.accuracy, q.majority, q.majority_correct) == (0, 0, None, None, None)
    assert st.majority_vote_questions == 2  # q1 (a tie) and q2
    assert st.majority_vote_correct == 1 and st.majority_vote_ties == 1
    assert st.correctness[3] == (None, None)


def test_answer_key_must_agree_with_answers():
    with pytest.raises(ValueError, match="q1"):
        survey_statistics(sheet("p1", [R], [R]), answer_key={"q1": "synthetic"})


def test_empty_records_are_a_clear_error():
    with pytest.raises(ValueError, match="no survey answers"):
        survey_statistics([])


def test_majority_vote_ties_count_as_not_correct():
    truths = [R, R, S, S]
    recs = (
        sheet("p1", truths, [R, R, S, R])
        + sheet("p2", truths, [R, S, R, R])
        + sheet("p3", truths, [S, S, S, None])
        + sheet("p4", truths, [R, S, R, None])
    )
    st = stats_of(recs)
    # q1: 3 right 1 wrong -> correct; q2: 1-3 -> wrong; q3: 2-2 tie -> not correct; q4: 0-2 -> wrong.
    assert [(q.correct, q.answered) for q in st.questions] == [(3, 4), (1, 4), (2, 4), (0, 2)]
    assert [q.majority for q in st.questions] == [R, S, None, R]
    assert [q.majority_correct for q in st.questions] == [True, False, False, False]
    assert (st.majority_vote_correct, st.majority_vote_ties, st.majority_vote_questions) == (1, 1, 4)


def test_fleiss_kappa_hand_computed():
    # Wikipedia-style check on 2 categories: items x (real, synthetic) counts, 3 raters each.
    counts = np.array([[3, 0], [0, 3], [2, 1], [1, 2]])
    p_j = counts.sum(0) / 12  # (0.5, 0.5) -> P_e = 0.5
    p_i = [(9 - 3) / 6, (9 - 3) / 6, (5 - 3) / 6, (5 - 3) / 6]
    expected = (np.mean(p_i) - np.sum(p_j**2)) / (1 - np.sum(p_j**2))
    assert fleiss_kappa(counts) == pytest.approx(expected) == pytest.approx(1 / 3)
    assert fleiss_kappa(np.array([[3, 0], [3, 0]])) is None  # everyone always says "real"
    assert fleiss_kappa(np.zeros((0, 2))) is None


def test_fleiss_in_statistics_uses_questions_answered_by_all():
    truths = [R, S, R, S]
    recs = sheet("a", truths, [R, S, R, S]) + sheet("b", truths, [R, S, S, None]) + sheet("c", truths, [R, R, R, S])
    st = stats_of(recs)
    assert st.fleiss_questions == 3
    counts = np.array([[3, 0], [1, 2], [2, 1]])
    assert st.fleiss_kappa == pytest.approx(fleiss_kappa(counts))


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [-0.4, -0.2, 0.0, 0.1, 0.3]
    ci = bootstrap_mean_ci(values, n=2000, seed=3)
    assert ci == bootstrap_mean_ci(values, n=2000, seed=3)
    assert ci != bootstrap_mean_ci(values, n=2000, seed=4)
    assert ci[0] < np.mean(values) < ci[1]
    assert bootstrap_mean_ci(values, n=0, seed=0) is None
    with pytest.raises(ValueError):
        bootstrap_mean_ci(values, n=-1, seed=0)


def test_natural_question_order():
    ids = ["q10", "q2", "q1", "Q3"]
    recs = [SurveyAnswer("p", None, q, R, R) for q in ids] + [SurveyAnswer("p", None, n, S, S) for n in ["10", "9"]]
    st = stats_of(recs)
    assert [q.question for q in st.questions] == ["9", "10", "q1", "q2", "Q3", "q10"]
    assert sorted(["p10", "p2", "p1"], key=natural_key) == ["p1", "p2", "p10"]


def test_labels_are_normalised_and_bad_ones_named():
    rec = SurveyAnswer(" p1 ", "3", 7, " Real ", "SYNTHETIC")
    assert (rec.participant, rec.experience, rec.question, rec.truth, rec.answer) == ("p1", 3, "7", R, S)
    with pytest.raises(ValueError, match="'fake'"):
        SurveyAnswer("p1", None, "q1", "real", "fake")
    with pytest.raises(ValueError, match="experience"):
        SurveyAnswer("p1", 6, "q1", "real", "real")


def test_inconsistent_records_are_rejected_together():
    recs = [
        SurveyAnswer("p1", 1, "q1", R, R),
        SurveyAnswer("p1", 1, "q1", R, S),
        SurveyAnswer("p2", 1, "q1", S, S),
        SurveyAnswer("p1", 2, "q2", R, S),
    ]
    with pytest.raises(ValueError) as exc:
        survey_statistics(recs)
    msg = str(exc.value)
    assert "record 1" in msg and "record 2" in msg and "record 3" in msg


# ------------------------------------------------------------------------------------------- the reference


TRUTH = "RSSSSRSSSRSRSSRSRRRSSRRRSRRSRSRRRSSRSRRS"  # q9 synthetic, q15 real
CORRECT = [  # 13 participants x 40 questions, 1 = right: row sums 26, 12, ..., column sums as in section 5.2
    "1111111101110000101011111001001111001101",
    "0000000000000000000000000000111111111111",
    "1100111001101101111101100001001100001101",
    "1100111001100000101011111111111100000000",
    "1111111101111000000000000000000011111111",
    "1100000000000101111111111111111000000000",
    "1111111101100000000000000000000111111111",
    "1100000000011101111111111111000000000000",
    "1111110000000000000000000000111111111111",
    "1100001111111111111110000000000000000000",
    "0100000000000000000001111111111111111000",
    "1111111111111000000000000000000000000111",
    "0000000000000111111111111111000000000000",
]
EXPERIENCE = [1, 2, 1, 3, 2, 5, 1, 4, 2, 3, 1, 2, 3]


def reference_records() -> list[SurveyAnswer]:
    truths = [R if c == "R" else S for c in TRUTH]
    recs = []
    for n, (row, exp) in enumerate(zip(CORRECT, EXPERIENCE, strict=True), start=1):
        answers = [t if c == "1" else flip(t) for t, c in zip(truths, row, strict=True)]
        recs += sheet(f"p{n}", truths, answers, exp)
    return recs


def test_reference_headline_shape():
    recs = reference_records()
    st = stats_of(recs)
    truths = {r.question: r.truth for r in recs}
    sk = []
    for n in range(1, 14):
        mine = [r for r in recs if r.participant == f"p{n}"]
        sk.append(cohen_kappa_score([r.truth for r in mine], [r.answer for r in mine]))
        assert st.participant(f"p{n}").kappa == pytest.approx(sk[-1])
    assert len(st.participants) == 13 and len(st.questions) == 40
    assert sum(t == R for t in truths.values()) == 20
    assert st.mean_kappa == pytest.approx(np.mean(sk))
    assert round(st.mean_kappa, 2) == -0.08
    assert round(st.max_kappa, 2) == 0.30 and round(st.min_kappa, 2) == -0.40
    assert st.participant("p2").correct == 12
    assert round(st.mean_correct, 1) == 18.5
    assert st.majority_vote_correct == 17 and st.majority_vote_ties == 0
    assert np.mean([q.correct for q in st.questions]) == 6
    assert [(q.question, q.correct) for q in most_fooling(st, "synthetic")] == [("q9", 2)]
    assert [(q.question, q.correct) for q in most_fooling(st, "real")] == [("q15", 2)]
    assert max(q.correct for q in st.questions if q.truth == S) == 11
    assert max(q.correct for q in st.questions if q.truth == R) == 10
    for label, levels in (("1-2", {1, 2}), (">=3", {3, 4, 5})):
        group = [k for k, e in zip(sk, EXPERIENCE, strict=True) if e in levels]
        assert st.mean_kappa_by_experience[label] == pytest.approx(np.mean(group))
    assert set(st.mean_kappa_by_experience) == {"1-2", ">=3", "1", "2", "3", "4", "5"}
    lo, hi = st.kappa_ci95
    assert lo < st.mean_kappa < hi
    assert st.pooled_correct == 240 and st.pooled_answered == 520
    assert st.fleiss_questions == 40 and -1 <= st.fleiss_kappa <= 1
    assert st.correctness[8].count(True) == 2


def test_json_has_required_keys_and_is_strict():
    data = strict_json(stats_of(reference_records()))
    for key in (
        "participants",
        "mean_kappa",
        "min_kappa",
        "max_kappa",
        "mean_correct",
        "majority_vote_correct",
        "questions",
        "kappa_ci95",
        "fleiss_kappa",
        "mean_kappa_by_experience",
        "pooled_binomial_p",
    ):
        assert key in data
    assert {"id", "experience", "answered", "correct", "kappa"} <= set(data["participants"][0])
    assert {"question", "truth", "answered", "correct"} <= set(data["questions"][0])
    assert data["majority_vote_correct"] == 17
    assert len(data["correctness_matrix"]["correct"]) == 40
    assert len(data["correctness_matrix"]["correct"][0]) == 13


# ------------------------------------------------------------------------------------------------------- CSV


GOOD_CSV = """participant,experience,question,truth,answer
p1,1,q1,real,Real
p1,1,q2,synthetic,real
p2,,q1,real,synthetic
p2,,q2,synthetic, Synthetic
"""


def test_read_csv_text_with_free_column_order_and_extra_columns():
    text = "note,answer,truth,question,experience,participant\nx,real,real,q1,3,p1\ny,,synthetic,q2,3,p1\n"
    recs = read_responses_csv(text)
    assert recs == [SurveyAnswer("p1", 3, "q1", R, R), SurveyAnswer("p1", 3, "q2", S, None)]


def test_read_csv_with_bom_and_crlf(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_CSV.replace("\n", "\r\n").encode())
    recs = read_responses_csv(path)
    assert recs == read_responses_csv(GOOD_CSV)
    assert read_responses_csv(str(path)) == recs
    assert read_responses_csv(path.read_bytes()) == recs
    assert recs[2] == SurveyAnswer("p2", None, "q1", R, S)


def test_csv_errors_list_every_bad_line_at_once():
    text = (
        "participant,experience,question,truth,answer\n"
        "p1,1,q1,real,real\n"  # line 2 ok
        "p1,1,q2,maybe,real\n"  # line 3 bad truth
        "p1,7,q3,real,real\n"  # line 4 bad experience
        "p1,1,q1,real,synthetic\n"  # line 5 duplicate of line 2
        "p2,2,q1,synthetic,real\n"  # line 6 q1 truth differs from line 2
        "p2,3,q4,real,real\n"  # line 7 experience differs from line 6
        "p3,1,q5,real\n"  # line 8 missing answer
        "p3,x,q6,real,nope\n"  # line 9 two bad cells
    )
    with pytest.raises(ResponsesCSVError) as exc:
        read_responses_csv(text)
    msg = str(exc.value)
    assert "header as line 1" in msg
    for line in (3, 4, 5, 6, 7, 8, 9):
        assert f"line {line}:" in msg
    assert "line 2:" not in msg.replace("on line 2", "")
    assert "'maybe'" in msg and "'nope'" in msg and "'x'" in msg and "answer" in msg
    assert "\n" not in msg
    # the same problems, structured: (line, problem) in line order, each also in the message
    problems = exc.value.problems
    assert [line for line, _ in problems] == [3, 4, 5, 6, 7, 8, 9]
    assert all(f"line {line}: {problem}" in msg for line, problem in problems)
    assert problems[2] == (5, "participant 'p1' answers question 'q1' again (first on line 2)")
    assert "'x'" in problems[-1][1] and "'nope'" in problems[-1][1]


def test_csv_error_message_lists_the_first_problems_and_carries_them_all():
    rows = "".join(f"p{i},1,q1,maybe,real\n" for i in range(MAX_LISTED_PROBLEMS + 5))
    with pytest.raises(ResponsesCSVError) as exc:
        read_responses_csv("participant,experience,question,truth,answer\n" + rows)
    assert len(exc.value.problems) == MAX_LISTED_PROBLEMS + 5
    assert [line for line, _ in exc.value.problems] == list(range(2, MAX_LISTED_PROBLEMS + 7))
    assert str(exc.value).endswith("; and 5 more")
    assert f"line {MAX_LISTED_PROBLEMS + 1}:" in str(exc.value)
    assert f"line {MAX_LISTED_PROBLEMS + 2}:" not in str(exc.value)


def test_numbered_responses_give_each_answer_its_file_line():
    text = "participant,experience,question,truth,answer\n\np1,1,q1,real,real\n\n\np1,1,q2,synthetic,\n"
    numbered = read_numbered_responses(text)
    assert [line for line, _ in numbered] == [3, 6]
    assert [rec for _, rec in numbered] == read_responses_csv(text)
    assert numbered[1][1].answer is None


def test_experience_scale_names_its_two_ends():
    assert [experience_label(level) for level in range(1, 6)] == [
        "1 - Barely any experience",
        "2",
        "3",
        "4",
        "5 - Pathologist",
    ]


def test_csv_header_must_name_the_columns():
    with pytest.raises(ValueError, match="lacks column.*truth") as exc:
        read_responses_csv("participant,experience,question,answer\np1,1,q1,real\n")
    assert not isinstance(exc.value, ResponsesCSVError)  # one problem of the whole file, not of its rows
    with pytest.raises(ValueError, match="empty"):
        read_responses_csv("\n\n")


def test_header_only_csv_reads_as_no_answers():
    assert read_responses_csv("participant,experience,question,truth,answer\n") == []


def test_responses_csv_round_trip():
    recs = reference_records()[:50] + [SurveyAnswer("p,x", None, 'q"1', S, None)]
    text = responses_csv(recs)
    assert text.splitlines()[0] == "participant,experience,question,truth,answer"
    assert read_responses_csv(text) == recs


def test_summary_csv_has_one_row_per_participant():
    st = stats_of(reference_records())
    lines = summary_csv(st).splitlines()
    assert lines[0] == "participant,experience,answered,correct,accuracy,kappa,binomial_p"
    assert len(lines) == 14
    assert lines[2].startswith("p2,2,40,12,0.3,-0.4,")


FORMULA = '=HYPERLINK("x")'


def cells(text: str) -> list[list[str]]:
    import csv
    import io

    return list(csv.reader(io.StringIO(text)))


def test_exports_neutralise_formulas_and_read_back_unchanged():
    recs = sheet(FORMULA, [R, S], [R, R], experience=2, prefix="@q") + sheet(
        "p2", [R, S], [S, S], experience=4, prefix="@q"
    )
    strategies = {FORMULA: "+ the nuclei", "p2": "-0.5 is a number, this is not"}
    raw = responses_csv(recs, strategies)
    rows = cells(raw)
    assert rows[0] == ["participant", "experience", "question", "truth", "answer", "strategy"]
    assert rows[1] == ["'" + FORMULA, "2", "'@q1", "real", "real", "'+ the nuclei"]
    assert rows[3][-1] == "'-0.5 is a number, this is not"
    assert not any(c.startswith(("=", "+", "-", "@")) for row in rows for c in row)
    assert read_responses_csv(raw) == recs  # the product reads its own export back (strategy column ignored)
    summary = cells(summary_csv(stats_of(recs), strategies))
    assert summary[0][-1] == "strategy"
    assert {r[0] for r in summary[1:]} == {"'" + FORMULA, "p2"}
    assert ["'+ the nuclei"] == [r[-1] for r in summary[1:] if r[0] == "'" + FORMULA]
    assert [r[1:6] for r in summary[1:] if r[0] == "p2"] == [["4", "2", "1", "0.5", "0.0"]]
    assert "p2,2,40,12,0.3,-0.4," in summary_csv(stats_of(reference_records()))  # a negative kappa stays a number


def test_excluded_participants_are_in_no_statistic():
    everyone = reference_records()
    left_out = {"p2", "p5"}
    st = stats_of(everyone, exclude=left_out, bootstrap=100)
    alone = stats_of([r for r in everyone if r.participant not in left_out], bootstrap=100)
    assert st.excluded_participants == 2 and alone.excluded_participants == 0
    assert st.participants == alone.participants and st.questions == alone.questions
    assert (st.mean_kappa, st.fleiss_kappa, st.majority_vote_correct, st.pooled_binomial_p, st.kappa_ci95) == (
        alone.mean_kappa,
        alone.fleiss_kappa,
        alone.majority_vote_correct,
        alone.pooled_binomial_p,
        alone.kappa_ci95,
    )
    assert st.mean_kappa != stats_of(everyone, bootstrap=100).mean_kappa
    assert strict_json(st)["excluded_participants"] == 2
    assert "p2" not in {row.split(",")[0] for row in summary_csv(st).splitlines()}
    with pytest.raises(ValueError, match=r"no survey answers.*\(13 participants excluded\)"):
        survey_statistics(everyone, exclude={r.participant for r in everyone} | {"nobody"})


# ------------------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def reference_csv(tmp_path):
    path = tmp_path / "responses.csv"
    path.write_text(responses_csv(reference_records()))
    return path


def test_cli_json(reference_csv, capsys):
    assert main(["survey-stats", "--responses", str(reference_csv), "--json", "--bootstrap", "200", "--seed", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["majority_vote_correct"] == 17
    assert round(data["mean_kappa"], 2) == -0.08
    assert data["kappa_ci95_bootstrap"] == 200 and data["kappa_ci95_seed"] == 1
    assert len(data["participants"]) == 13 and not math.isnan(data["max_kappa"])


def test_cli_table(reference_csv, capsys):
    assert main(["survey-stats", "--responses", str(reference_csv), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["participant", "experience"]
    assert "mean kappa: -0.077" in out
    assert "min kappa: -0.400, max kappa: +0.300" in out
    assert "1-2:" in out and ">=3:" in out
    assert "mean correct: 18.5" in out
    assert "majority vote correct: 17 of 40" in out
    assert "synthetic question q9 (2 of 13 correct)" in out


def test_cli_malformed_file_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("participant,experience,question,truth,answer\np1,1,q1,maybe,real\np1,9,q2,real,real\n")
    assert main(["survey-stats", "--responses", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2" in err and "line 3" in err
    assert "Traceback" not in err


def test_cli_missing_file_exits_2(tmp_path, capsys):
    assert main(["survey-stats", "--responses", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_cli_folder_or_binary_file_exits_2_naming_it(tmp_path, capsys):
    assert main(["survey-stats", "--responses", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder; expected a CSV file" in err and str(tmp_path) in err and "Traceback" not in err
    binary = tmp_path / "answers.xlsx"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")
    assert main(["survey-stats", "--responses", str(binary)]) == 2
    err = capsys.readouterr().err
    assert "answers.xlsx" in err and "not UTF-8 text" in err
