"""Manage surveys: a demo survey in one click, new surveys from uploads, Library samples or a folder, links."""

import streamlit as st

from app import survey_admin as admin
from app import survey_demo as demo
from app import survey_export as export
from app import survey_files as files
from app import survey_store as store
from app.pages_registry import PAGES_DIR
from app.plain import literal
from app.settings import load_settings
from app.survey_auth import require_researcher, survey_link_refusal
from db import repository as repo
from renal_ldm.survey import CLOSED, INVITATIONS_PER_BATCH_MAX, OPEN, TITLE_MAX_CHARS
from renal_ldm.survey_demo import demo_model_available
from renal_ldm.survey_images import DEFAULT_COUNT, DEFAULT_SIZE, MAX_SIZE, MIN_SIZE

require_researcher()
settings = load_settings()

st.title("Manage surveys")
st.caption(
    "Blind real-vs-synthetic quizzes for pathologists: each image is shown alone, answers are scored "
    "with Cohen's kappa on the Results page."
)

CREATED = "survey_manage.created"  # (title, token, notes, warnings) of the survey made last, shown once
DEMO_JOB = "survey_manage.demo_job"

# ---------------------------------------------------------------------------------------- demo survey
with st.container(border=True):
    st.subheader("Try it at once")
    if demo_model_available():
        st.markdown(
            "Creates a demo survey: 20 phantom patches (standing in for real tissue) and 20 samples of "
            "the shipped demo model. Sampling takes a few minutes on a CPU."
        )
    else:
        st.markdown(
            "Creates a **phantom-only** demo survey in a few seconds: the shipped demo model is not "
            "installed, so both halves are procedural phantom tissue (the 'synthetic' half from another "
            "seed, and the title says so). It lets you walk the participant flow and the results page; "
            "`renal-ldm survey-demo --model RUN/model` makes one with real model samples."
        )
    job = demo.get_job(st.session_state.get(DEMO_JOB))
    if job is not None and job.finished:
        st.session_state.pop(DEMO_JOB, None)
        if job.error:
            st.error(f"The demo survey could not be created: {literal(job.error)}")
        else:
            st.session_state[CREATED] = (job.result.title, job.result.token, [], [])
        job = None
    if job is None:
        if st.button("Create a demo survey", key="survey_demo", type="primary"):
            st.session_state[DEMO_JOB] = demo.start_demo_job().id
            st.rerun()
    else:

        @st.fragment(run_every=1.0)
        def demo_progress() -> None:
            running = demo.get_job(st.session_state.get(DEMO_JOB))
            if running is None or running.finished:
                st.rerun(scope="app")
            st.progress(
                running.fraction, text=f"Building the demo survey: {running.stage} {running.done} / {running.total}"
            )

        demo_progress()

created = st.session_state.pop(CREATED, None)
if created:
    created_title, created_token, created_notes, created_warnings = created
    if link_refusal := survey_link_refusal(settings.survey_only):
        st.success(f"Created survey {literal(repr(created_title))}.")
        st.warning(link_refusal)
    else:
        st.success(
            f"Created survey {literal(repr(created_title))}. Participant link: "
            f"{admin.absolute_link(created_token, st.context.url, st.get_option('server.baseUrlPath'))}"
        )
    for note in created_notes:
        st.info(literal(note))
    if created_warnings:  # plain text: the warnings name the researcher's files
        st.warning("Check before sending the link: what follows may give the answer away.")
        st.code("\n".join(f"- {w}" for w in created_warnings), language=None, wrap_lines=True)

# ------------------------------------------------------------------------------------- create a survey
with st.expander("Create a survey", expanded=True):
    title = st.text_input(
        "Title", key="survey_title", max_chars=TITLE_MAX_CHARS, placeholder="e.g. Renal realism study, June"
    )
    c1, c2, c3 = st.columns(3)
    n_real = c1.number_input("Real images", 1, 500, DEFAULT_COUNT, key="survey_n_real")
    n_synthetic = c2.number_input("Synthetic images", 1, 500, DEFAULT_COUNT, key="survey_n_synthetic")
    size = c3.number_input("Image size (px)", MIN_SIZE, MAX_SIZE, DEFAULT_SIZE, step=32, key="survey_size")
    st.caption(
        f"Every image is decoded, converted to sRGB, center-cropped and resized to size x size, and saved "
        f"as PNG without any metadata under a random name, so nothing but the pixels can give the answer "
        f"away. Images smaller than the size are refused unless up-scaling is allowed. Uploads: up to "
        f"{settings.max_upload_mb} MB per file. More images than asked for: a random subset is used."
    )

    real_col, synthetic_col = st.columns(2)
    with real_col:
        st.markdown("**Real images**")
        real_source = st.radio(
            "Source of the real images", files.REAL_SOURCES, key="survey_real_source", horizontal=True
        )
        if real_source == files.UPLOAD:
            st.file_uploader(
                "Real images",
                accept_multiple_files=True,
                key="survey_real_files",
                max_upload_size=settings.max_upload_mb,
            )
        else:
            st.text_input("Folder on the server with real images", key="survey_real_folder")
    with synthetic_col:
        st.markdown("**Synthetic images**")
        synthetic_source = st.radio(
            "Source of the synthetic images", files.SYNTHETIC_SOURCES, key="survey_synthetic_source", horizontal=True
        )
        if synthetic_source == files.UPLOAD:
            st.file_uploader(
                "Synthetic images",
                accept_multiple_files=True,
                key="survey_synthetic_files",
                max_upload_size=settings.max_upload_mb,
            )
        elif synthetic_source == files.LIBRARY:
            samples = files.library_choices()
            if not samples:
                st.info("The Library has no samples yet: generate some first, or use another source.")
            st.multiselect(
                "Library samples",
                [s.id for s in samples],
                default=[s.id for s in samples[: int(n_synthetic)]],
                format_func={s.id: files.library_label(s) for s in samples}.get,
                key="survey_library_samples",
            )
        else:
            st.text_input("Folder on the server with synthetic images", key="survey_synthetic_folder")
    open_now = st.checkbox("Open for participants now", value=True, key="survey_open_now")
    allow_upscale = st.checkbox(
        "Allow up-scaling",
        value=False,
        key="survey_allow_upscale",
        help="Accept images smaller than the survey size (they are enlarged). Enlarged "
        "images look soft, which can give the answer away; each is listed as a warning.",
    )

    if st.button("Create survey", type="primary", key="survey_create"):
        with st.spinner("Checking and normalising the images..."):
            real_files, real_errors = files.gather(
                real_source,
                "real",
                int(n_real),
                uploads=st.session_state.get("survey_real_files"),
                folder=st.session_state.get("survey_real_folder"),
            )
            synthetic_files, synthetic_errors = files.gather(
                synthetic_source,
                "synthetic",
                int(n_synthetic),
                uploads=st.session_state.get("survey_synthetic_files"),
                library_ids=st.session_state.get("survey_library_samples"),
                folder=st.session_state.get("survey_synthetic_folder"),
            )
            result = admin.create_survey_from_files(
                title,
                real_files,
                synthetic_files,
                n_real=int(n_real),
                n_synthetic=int(n_synthetic),
                size=int(size),
                max_upload_mb=settings.max_upload_mb,
                open_now=open_now,
                allow_upscale=allow_upscale,
                source_errors=real_errors + synthetic_errors,
            )
        if result.errors:
            st.error(
                "The survey was not created. Fix these and try again (your files are still here):\n\n"
                + "\n".join(f"- {literal(e)}" for e in result.errors)
            )
        else:
            st.session_state[CREATED] = (title.strip(), result.token, result.notes, result.warnings)
            st.rerun()

# --------------------------------------------------------------------------------------------- surveys
st.subheader("Surveys")
surveys = repo.list_surveys()
if surveys and (link_refusal := survey_link_refusal(settings.survey_only)):
    st.warning(link_refusal, icon=":material/visibility_off:")
if not surveys:
    st.info("No surveys yet: create one above, or a demo survey in one click.")
base_path = st.get_option("server.baseUrlPath")


def on_shared_link_toggle(survey_id: int, key: str) -> None:
    repo.set_shared_link(survey_id, bool(st.session_state[key]))


def participants_panel(survey: repo.Survey, links_shown: bool) -> None:
    """Who may start this survey: the participant cap, the shared link, one-use invitation links."""
    invitations = repo.list_invitations(survey.id)
    used = sum(i.used for i in invitations)
    cap = "no participant cap" if survey.participant_cap is None else f"cap {survey.participant_cap}"
    with st.expander(
        f"Participants: {cap} · shared link {'on' if survey.shared_link else 'off'} · "
        f"{len(invitations)} invitations ({used} used)"
    ):
        left, right = st.columns(2)
        new_cap = left.number_input(
            "Participant cap (0 = no cap)",
            0,
            1_000_000,
            survey.participant_cap or 0,
            key=f"survey_cap_{survey.id}",
            help="Once this many participants have started, nobody more can start: the "
            "survey page says it has all the participants it needs",
        )
        if left.button("Set cap", key=f"survey_set_cap_{survey.id}"):
            repo.set_participant_cap(survey.id, admin.parse_cap(new_cap))
            st.rerun()
        toggle_key = f"survey_shared_link_{survey.id}"
        right.toggle(
            "Shared link starts participants",
            value=survey.shared_link,
            key=toggle_key,
            on_change=on_shared_link_toggle,
            args=(survey.id, toggle_key),
            help="Off: only one-use invitation links start participants; those who started keep going",
        )
        count = right.number_input(
            "Invitations to create",
            1,
            INVITATIONS_PER_BATCH_MAX,
            10,
            key=f"survey_invite_count_{survey.id}",
            help="One-use links, one per person: each starts one participant and then only resumes that participant",
        )
        if right.button("Create invitations", key=f"survey_invite_create_{survey.id}"):
            repo.create_invitations(survey.id, int(count))
            st.rerun()
        if not invitations:
            return
        if not links_shown:
            st.caption("Invitation links hidden in open mode (see above).")
            return
        page_url = st.context.url
        st.dataframe(
            admin.invitation_rows(invitations, page_url, base_path),
            hide_index=True,
            key=f"survey_invitations_{survey.id}",
        )
        st.download_button(
            "Invitation links (CSV)",
            admin.invitations_csv(survey, invitations, page_url, base_path),
            file_name=f"survey_{survey.id}_invitations.csv",
            mime="text/csv",
            key=f"survey_invitations_csv_{survey.id}",
            on_click="ignore",
        )


for survey in surveys:
    with st.container(border=True):
        head, actions = st.columns([3, 2])
        with head:
            st.markdown(f"**{literal(survey.title)}**" + (" · demo" if survey.is_demo else ""))
            st.caption(
                f"{survey.status} · {survey.item_count} images · {survey.participant_count} participants "
                f"({survey.finished_count} finished) · created {survey.created_at:%Y-%m-%d %H:%M} UTC"
            )
            if survey_link_refusal(settings.survey_only) is None:
                st.code(admin.absolute_link(survey.token, st.context.url, base_path), language=None)
            else:
                st.caption("Participant link hidden in open mode (see above).")
        participants_panel(survey, links_shown=survey_link_refusal(settings.survey_only) is None)
        with actions:
            a, b, c = st.columns(3)
            if survey.status == OPEN:
                if a.button("Close", key=f"close_{survey.id}", width="stretch"):
                    repo.set_survey_status(survey.id, CLOSED)
                    st.rerun()
            elif a.button("Open", key=f"open_{survey.id}", width="stretch"):
                repo.set_survey_status(survey.id, OPEN)
                st.rerun()
            if b.button(
                "Duplicate",
                key=f"duplicate_{survey.id}",
                width="stretch",
                help="A new draft survey with the same images and no participants",
            ):
                try:
                    store.duplicate_image_survey(survey.id)
                except (ValueError, OSError) as exc:
                    st.error(f"The survey could not be duplicated: {literal(exc)}")
                else:
                    st.rerun()
            if c.button("Results", key=f"results_{survey.id}", width="stretch"):
                st.session_state["survey_results.survey_id"] = survey.id
                st.switch_page(str(PAGES_DIR / "survey_results.py"))
            st.download_button(
                "Export (ZIP)",
                data=lambda survey_id=survey.id: export.export_zip(survey_id),
                file_name=export.export_name(survey),
                mime="application/zip",
                key=f"export_{survey.id}",
                on_click="ignore",
                icon=":material/download:",
                width="stretch",
                help="Answers, items with their truth, and where each image came "
                "from (model, caption, seed; original file names)",
            )
