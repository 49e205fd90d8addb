"""`renal-ldm survey-stats`: agreement of survey participants with the truth, as a table or JSON."""

from __future__ import annotations

import argparse
import json

from renal_ldm.survey import REAL, SYNTHETIC, SurveyStats, most_fooling, read_responses_csv, survey_statistics


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "survey-stats",
        help="Cohen's kappa of each survey participant against the truth, and the survey summary",
    )
    p.add_argument(
        "--responses",
        required=True,
        metavar="FILE.csv",
        help="answers with columns participant,experience,question,truth,answer",
    )
    p.add_argument("--json", action="store_true", help="print every statistic as JSON")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=2000,
        metavar="N",
        help="bootstrap resamples for the 95%% CI of the mean kappa (0: no CI; default 2000)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    records = read_responses_csv(args.responses)
    stats = survey_statistics(records, bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps(stats.to_json_dict(), indent=2, allow_nan=False))
    else:
        print(format_table(stats))
    return 0


def _f(x: float | None, spec: str = "+.3f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(stats: SurveyStats) -> str:
    """Per-participant table, then the summary lines the reference study reports (section 5.2)."""
    rows = [("participant", "experience", "answered", "correct", "accuracy", "kappa", "p (binomial)")]
    for p in stats.participants:
        rows.append(
            (
                p.id,
                "-" if p.experience is None else str(p.experience),
                str(p.answered),
                str(p.correct),
                _f(p.accuracy, ".3f"),
                _f(p.kappa),
                _f(p.binomial_p, ".3g"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    return "\n".join(lines + [""] + summary_lines(stats))


def summary_lines(stats: SurveyStats) -> list[str]:
    n_real = sum(q.truth == REAL for q in stats.questions)
    lines = [
        f"participants: {len(stats.participants)}, questions: {len(stats.questions)} "
        f"({n_real} real, {len(stats.questions) - n_real} synthetic)"
    ]
    ci = stats.kappa_ci95
    ci_text = (
        "" if ci is None else f" (95% CI {ci[0]:+.3f} .. {ci[1]:+.3f}, bootstrap {stats.bootstrap}, seed {stats.seed})"
    )
    lines.append(f"mean kappa: {_f(stats.mean_kappa)}{ci_text}")
    lines.append(f"min kappa: {_f(stats.min_kappa)}, max kappa: {_f(stats.max_kappa)}")
    groups = ", ".join(f"{g.label}: {_f(g.mean_kappa)} (n={g.participants})" for g in stats.experience_groups)
    lines.append(f"mean kappa by experience: {groups}")
    lines.append(f"mean correct: {stats.mean_correct:.1f}")
    lines.append(
        f"majority vote correct: {stats.majority_vote_correct} of {stats.majority_vote_questions} "
        f"answered questions (ties, counted as not correct: {stats.majority_vote_ties})"
    )
    lines.append(
        f"Fleiss' kappa between participants: {_f(stats.fleiss_kappa)} "
        f"(over {stats.fleiss_questions} questions answered by all)"
    )
    lines.append(
        f"pooled binomial test: {stats.pooled_correct} of {stats.pooled_answered} answers correct, "
        f"p = {_f(stats.pooled_binomial_p, '.3g')}"
    )
    for truth, fooled_as in ((SYNTHETIC, REAL), (REAL, SYNTHETIC)):
        for q in most_fooling(stats, truth):
            lines.append(
                f"most often taken for {fooled_as}: {truth} question {q.question} ({q.correct} of {q.answered} correct)"
            )
    return lines
