"""Results: Cohen's kappa per participant and the survey summary of the reference study, strategies, exclusions;
CSV export and import."""

import altair as alt
import pandas as pd
import streamlit as st

from app import survey_admin as admin
from app.plain import literal
from app.survey_auth import require_researcher
from db import repository as repo
from renal_ldm.survey import EXPERIENCE_ENDS, EXPERIENCE_MAX, EXPERIENCE_MIN, REAL

require_researcher()

SELECTED = "survey_results.survey_id"


def fmt(x, spec="+.3f"):
    return "-" if x is None else format(x, spec)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def on_exclude_toggle(survey_id: int, participant_id: int, key: str) -> None:
    admin.set_excluded(survey_id, participant_id, bool(st.session_state[key]))


st.title("Survey results")
surveys = repo.list_surveys()
if not surveys:
    st.info("No surveys yet: create one on Manage surveys.")
    st.stop()

by_id = {s.id: s for s in surveys}
ids = list(by_id)
preselected = st.session_state.get(SELECTED)
survey_id = st.selectbox(
    "Survey",
    ids,
    index=ids.index(preselected) if preselected in by_id else 0,
    format_func=lambda i: f"{by_id[i].title} ({by_id[i].status}, {by_id[i].participant_count} participants)",
    key="survey_results_select",
)
st.session_state[SELECTED] = survey_id
survey = by_id[survey_id]

data = admin.survey_data(survey_id)
stats = admin.statistics(data)

if data.excluded:
    st.info(
        f"{plural(data.excluded, 'participant')} excluded: left out of every statistic and download on this "
        "page (their answers stay stored; see Exclude participants below).",
        icon=":material/person_off:",
    )
if stats is None:
    if data.excluded and any(p.answered for p in data.participants):
        st.info("Every participant who answered is excluded: nothing to compute. Include someone again below.")
    else:
        st.info(
            f"Nobody has answered this survey yet ({survey.item_count} images). Share its link from Manage "
            "surveys, or import responses below."
        )
else:
    n_real = sum(q.truth == REAL for q in stats.questions)
    people = len(stats.participants)
    st.caption(
        f"{plural(people, 'participant')} · {len(stats.questions)} questions ({n_real} real, "
        f"{len(stats.questions) - n_real} synthetic). Kappa: 1 perfect, 0 chance, -1 always wrong."
    )
    ci = stats.kappa_ci95
    m = st.columns(4)
    m[0].metric("Mean kappa", fmt(stats.mean_kappa), help="Mean of the participants' Cohen's kappa against the truth")
    m[1].metric(
        "95% CI of the mean kappa",
        "-" if ci is None else f"{ci[0]:+.3f} .. {ci[1]:+.3f}",
        help=f"Percentile bootstrap over participants ({stats.bootstrap} resamples, seed {stats.seed}); "
        "needs 2 participants with a kappa",
    )
    m[2].metric("Min kappa", fmt(stats.min_kappa))
    m[3].metric("Max kappa", fmt(stats.max_kappa))
    m = st.columns(5)
    m[0].metric("Mean correct answers", f"{stats.mean_correct:.1f}")
    m[1].metric(
        "Majority vote correct",
        f"{stats.majority_vote_correct} / {stats.majority_vote_questions}",
        help=f"Questions where more participants were right than wrong; ties ({stats.majority_vote_ties}) "
        "count as not correct",
    )
    m[2].metric(
        "Fleiss' kappa",
        fmt(stats.fleiss_kappa),
        help=f"Agreement between participants, over the {stats.fleiss_questions} questions all answered",
    )
    m[3].metric("Answers correct (pooled)", f"{stats.pooled_correct} / {stats.pooled_answered}")
    m[4].metric(
        "Binomial test p (pooled)",
        fmt(stats.pooled_binomial_p, ".3g"),
        help="Two-sided test of the pooled share correct against 0.5; answers by one person are not "
        "independent, so read it as descriptive (per-participant p values are in the table)",
    )

    st.subheader("Participants")
    st.dataframe(pd.DataFrame(admin.participant_rows(stats)), hide_index=True, key="survey_participants_table")

    st.subheader("Strategies")
    strategies = admin.strategy_rows(stats, data)
    if strategies:
        st.dataframe(
            pd.DataFrame(strategies),
            hide_index=True,
            key="survey_strategies_table",
            column_config={"strategy": st.column_config.TextColumn("strategy", width="large")},
        )
    else:
        st.caption("No participant wrote a strategy.")

    st.subheader("Mean kappa by experience")
    st.caption(
        f"{EXPERIENCE_MIN} = {EXPERIENCE_ENDS[EXPERIENCE_MIN].lower()} ... {EXPERIENCE_MAX} = "
        f"{EXPERIENCE_ENDS[EXPERIENCE_MAX].lower()}; the reference study compared 1-2 with >= 3."
    )
    st.dataframe(pd.DataFrame(admin.experience_rows(stats)), hide_index=True)

    st.subheader("Images that fooled the most")
    fooling = admin.fooling_images(stats, data)
    if fooling:
        columns = st.columns(len(fooling))
        for column, (caption, _q, png) in zip(columns, fooling, strict=True):
            column.image(png, caption=caption, width=256)

    st.subheader("Correct answers per question")
    st.dataframe(
        pd.DataFrame(admin.question_rows(stats, data)),
        hide_index=True,
        column_config={"image": st.column_config.ImageColumn("image", width="small")},
    )

    st.subheader("Who got what right")
    heat = pd.DataFrame(admin.heatmap_rows(stats))
    chart = (
        alt.Chart(heat)
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("participant:N", sort=[p.id for p in stats.participants], title="participant"),
            y=alt.Y(
                "question:N",
                sort=alt.EncodingSortField("order"),
                title="question (truth)",
                axis=alt.Axis(labelOverlap=False, labelFontSize=10),
            ),
            color=alt.Color(
                "result:N",
                scale=alt.Scale(
                    domain=[admin.HEATMAP_CORRECT, admin.HEATMAP_WRONG, admin.HEATMAP_MISSING],
                    range=["#2e7d32", "#c62828", "#d0d0d0"],
                ),
                title="answer",
            ),
            tooltip=["question", "participant", "result"],
        )
        .properties(height=max(160, 18 * len(stats.questions)))
    )
    st.altair_chart(chart, width="stretch")

    st.subheader("Download")
    d1, d2 = st.columns(2)
    d1.download_button(
        "Raw answers (CSV)",
        admin.answers_csv(data),
        file_name=f"survey_{survey_id}_answers.csv",
        mime="text/csv",
        key="download_answers",
    )
    d2.download_button(
        "Per-participant summary (CSV)",
        admin.summary_csv(stats, data),
        file_name=f"survey_{survey_id}_summary.csv",
        mime="text/csv",
        key="download_summary",
    )

if data.participants:
    with st.expander(f"Exclude participants ({data.excluded} excluded)"):
        st.caption(
            "An excluded participant is left out of every statistic and download above; their answers stay "
            "stored, and including them again brings them back."
        )
        for participant in data.participants:
            key = f"survey_exclude_{survey_id}_{participant.id}"
            st.toggle(
                f"Exclude {admin.exclusion_label(participant)}",
                value=participant.excluded,
                key=key,
                on_change=on_exclude_toggle,
                args=(survey_id, participant.id, key),
            )

st.subheader("Import responses")
st.caption(
    "A CSV with the columns participant,experience,question,truth,answer (the raw-answers download has "
    "this format; its strategy column is ignored here). question is the question number of this survey "
    "(1, 2, ... or q1, q2, ...); truth is checked against the survey. All or nothing: if any row is wrong, "
    "nothing is imported. Each import adds new participants."
)
upload = st.file_uploader("Responses CSV", type=["csv", "txt"], key=f"survey_import_file_{survey_id}")
if st.button("Import", key="survey_import", disabled=upload is None):
    outcome = admin.import_csv(survey_id, upload.getvalue())
    if outcome.problems:
        st.error(
            "Nothing was imported. Problems (line numbers count the header as line 1):\n\n"
            + "\n".join(f"- {literal(p)}" for p in outcome.problems)
        )
    else:
        st.success(
            f"Imported {outcome.imported.answers} answers of {outcome.imported.participants} participants"
            + (f" ({outcome.skipped_blank_answers} empty answers skipped)" if outcome.skipped_blank_answers else "")
            + "."
        )
        st.button("Show the updated results", key="survey_import_refresh")
