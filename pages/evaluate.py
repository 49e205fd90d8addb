"""Evaluate: judge a model with the reference study's measurements, as background jobs; past runs and reports."""

import json

import streamlit as st

from app import background
from app import evaluations as ev
from app.access import current_identity
from app.model_choices import available_models
from app.plain import literal
from db import repository as repo
from renal_ldm.captions import GENERATING_CAPTION

JOB = "evaluate.job"  # (background job id, evaluation id) of the run this session started last
OTHER = "Another folder on the server"

st.title("Evaluate")
st.caption(
    "Does the caption steer the content (caption accuracy, the study's Table 5.1), can a classifier tell "
    "samples from real tissue (realism test), do synthetic patches help train a segmenter (mix experiment, "
    "Table 5.2)? Each run works in the background; its report stays listed below."
)

kind = st.radio(
    "Measurement", list(ev.KIND_LABELS), format_func=ev.KIND_LABELS.get, horizontal=True, key="evaluate.kind"
)
segmenters = {**ev.segmenter_choices(), OTHER: ""}
who = identity.name if (identity := current_identity()) else None

with st.form("evaluate.form"):
    if kind == ev.CAPTIONS:
        models = {c.name: c for c in available_models()}
        model = st.selectbox("Model", list(models), format_func=lambda n: models[n].label)
        caption = st.text_area("Generating caption", GENERATING_CAPTION, height=110)
        c1, c2, c3 = st.columns(3)
        n = c1.number_input("Samples", min_value=5, max_value=1000, value=20)
        steps = c2.number_input("DPM-Solver++ steps", min_value=5, max_value=200, value=20)
        seed = c3.number_input("First seed", min_value=0, value=0)
        choice = st.selectbox("Segmenter (judges the samples)", list(segmenters))
        other = st.text_input("Segmenter folder", placeholder=f"only for {OTHER!r}")
        c1, c2 = st.columns(2)
        min_component = c1.number_input(
            "Ignore predicted specks under (px)",
            min_value=0,
            max_value=10_000,
            value=0,
            help="0 counts every predicted pixel, as the reference did",
        )
        per_class = c2.checkbox(
            "Use the shipped phantom segmenter's sizes per class instead",
            help="Measured on phantoms it never saw (scripts/calibrate_speck_threshold.py): "
            + ", ".join(f"{name} {px}" for name, px in ev.PHANTOM_SPECK_SIZES.items())
            + " px. Its stray pixels otherwise mention glomeruli in 28% of phantoms that have none.",
        )
    elif kind == ev.REALISM:
        real = st.text_input("Real images (folder on the server)")
        synthetic = st.text_input("Synthetic images (folder on the server, e.g. a renal-ldm sample output)")
        epochs = st.number_input("Classifier epochs", min_value=1, max_value=200, value=20)
        features = st.selectbox(
            "Features for the Frechet distance",
            list(ev.FEATURE_CHOICES),
            help="The segmenter's encoder needs at least 2 x its feature width images per set",
        )
    else:
        real = st.text_input("Real patches with masks (folder on the server)")
        synthetic = st.text_input("Synthetic patches with masks (folder on the server)")
        val = st.text_input("Validation patches with masks (folder on the server)")
        c1, c2, c3 = st.columns(3)
        patches = c1.number_input("Patches per run", min_value=2, max_value=5000, value=198)
        seeds = c2.number_input("Seeds", min_value=1, max_value=10, value=1)
        epochs = c3.number_input("Epochs at most", min_value=1, max_value=500, value=30)
    submitted = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")

if submitted:
    try:
        if kind == ev.CAPTIONS:
            if not models:
                raise ValueError("no model is available: register one on the Generate page")
            started = ev.start_caption_accuracy(
                models[model].path,
                model,
                caption,
                int(n),
                segmenters[choice] or other,
                steps=int(steps),
                seed=int(seed),
                min_component_px=ev.PHANTOM_SPECK_SIZES if per_class else int(min_component),
                created_by=who,
            )
        elif kind == ev.REALISM:
            started = ev.start_realism(
                real, synthetic, features=ev.FEATURE_CHOICES[features], epochs=int(epochs), created_by=who
            )
        else:
            started = ev.start_mix_experiment(
                real, synthetic, val, patches=int(patches), seeds=int(seeds), epochs=int(epochs), created_by=who
            )
    except (ValueError, OSError) as exc:
        st.error(literal(exc))
    else:
        st.session_state[JOB] = (started.job.id, started.evaluation_id)


def job_panel(job_id: str) -> None:
    job = background.get(job_id)
    if job is None:
        return
    if not job.finished:
        st.progress(job.fraction, text=f"{job.stage}: {job.done} of {job.total}")
        st.button("Cancel", key="evaluate.cancel", on_click=job.cancel.set)
    elif job.error:
        st.error(literal(f"The evaluation failed: {job.error}"))
    else:
        st.success("Done: the report is listed below.")
        st.rerun()


if running := st.session_state.get(JOB):
    job = background.get(running[0])
    st.fragment(job_panel, run_every=1.0 if job and not job.finished else None)(running[0])

st.subheader("Runs")
runs = repo.list_evaluations()
if not runs:
    st.info("No evaluation has run yet.")
for evaluation in runs:
    with st.expander(literal(ev.describe(evaluation)), expanded=evaluation == runs[0]):
        st.caption(
            f"started {evaluation.created_at:%Y-%m-%d %H:%M} UTC"
            + (f" by {literal(evaluation.created_by)}" if evaluation.created_by else "")
        )
        st.code(json.dumps(evaluation.params, indent=1), language="json")
        if evaluation.error:
            st.error(literal(evaluation.error))
        for path in ev.report_files(evaluation):
            if path.suffix == ".md":
                st.markdown(path.read_text())
            elif path.suffix == ".png":
                st.image(str(path), caption=path.name)
        if evaluation.state == "done":
            st.download_button(
                "Report (ZIP)",
                data=lambda e=evaluation: ev.report_zip(e),
                file_name=f"evaluation_{evaluation.id}.zip",
                mime="application/zip",
                key=f"evaluate.zip_{evaluation.id}",
                on_click="ignore",
            )
