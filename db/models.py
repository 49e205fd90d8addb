"""The tables, as typed SQLAlchemy 2.x ORM classes.

The schema itself only ever changes through Alembic migrations (db/migrations/versions); a test compares these
classes with the migrations so a forgotten migration fails CI instead of losing survey answers on upgrade.
Repository functions (db/repository) are the only code that touches these classes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import expression
from sqlalchemy.types import TypeDecorator

from renal_ldm import survey
from renal_ldm.models.configs import SAMPLING

# Deterministic constraint names: Alembic needs names to alter or drop constraints later (SQLite batch mode too).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The survey's words and bounds come from its one vocabulary (renal_ldm.survey), shared with pages and statistics.
TRUTH_VALUES = survey.LABELS
SURVEY_STATUSES = survey.STATUSES
EXPERIENCE_MIN, EXPERIENCE_MAX = survey.EXPERIENCE_MIN, survey.EXPERIENCE_MAX
MODEL_KINDS = ("demo", "user")
ACCOUNT_ROLES = ("researcher", "annotator")
EVALUATION_KINDS = ("captions", "realism", "mix")
EVALUATION_STATES = ("running", "done", "failed")
SLIDE_KINDS = ("stitched", "generated", "registered")

PATH_LEN = 500
NAME_LEN = 200
TOKEN_LEN = 64


def utcnow() -> datetime:
    """Timestamps are always timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as aware UTC on every backend (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class ModelEntry(Base):
    """A registered checkpoint directory the app may sample from."""

    __tablename__ = "model_entries"
    __table_args__ = (CheckConstraint(_in("kind", MODEL_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sample(Base):
    """One generated image file under the data directory and how it was made."""

    __tablename__ = "samples"
    __table_args__ = (
        CheckConstraint("steps > 0", name="steps_positive"),
        CheckConstraint("size > 0", name="size_positive"),
        Index("ix_samples_model_name_created_at", "model_name", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_path: Mapped[str] = mapped_column(String(PATH_LEN), unique=True)
    caption: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str] = mapped_column(String(NAME_LEN))
    model_fingerprint: Mapped[str | None] = mapped_column(String(128))
    seed: Mapped[int] = mapped_column(BigInteger)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    scheduler: Mapped[str] = mapped_column(String(32), default=SAMPLING.scheduler)
    eta: Mapped[float] = mapped_column(Float, default=0.0)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    run_id: Mapped[str | None] = mapped_column(String(TOKEN_LEN), index=True)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CaptionPreset(Base):
    """A named caption (and the class levels it was composed from) a researcher reuses."""

    __tablename__ = "caption_presets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    caption: Mapped[str] = mapped_column(Text)
    levels: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Survey(Base):
    """A blind real-vs-synthetic quiz; participants reach it by its unguessable token."""

    __tablename__ = "surveys"
    __table_args__ = (CheckConstraint(_in("status", SURVEY_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(TOKEN_LEN), unique=True)
    title: Mapped[str] = mapped_column(String(survey.TITLE_MAX_CHARS))
    is_demo: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=survey.DRAFT)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # At most this many participants may start (None: no cap); checked in the transaction that inserts one.
    participant_cap: Mapped[int | None] = mapped_column(Integer)
    # False: only one-use invitation links start participants (the shared ?survey= link is refused).
    shared_link: Mapped[bool] = mapped_column(Boolean, default=True, server_default=expression.true())


class SurveyItem(Base):
    """One image of a survey. Participants only ever see public_id and the image, never truth."""

    __tablename__ = "survey_items"
    __table_args__ = (
        CheckConstraint(_in("truth", TRUTH_VALUES), name="truth"),
        CheckConstraint("position >= 0", name="position_nonnegative"),
        UniqueConstraint("survey_id", "position"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"), index=True)
    public_id: Mapped[str] = mapped_column(String(TOKEN_LEN), unique=True)
    image_path: Mapped[str] = mapped_column(String(PATH_LEN))
    truth: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)


class Participant(Base):
    """One person taking a survey; resume_token lets them continue after a reload."""

    __tablename__ = "participants"
    __table_args__ = (
        CheckConstraint(
            f"experience IS NULL OR (experience >= {EXPERIENCE_MIN} AND experience <= {EXPERIENCE_MAX})",
            name="experience_range",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"), index=True)
    resume_token: Mapped[str] = mapped_column(String(TOKEN_LEN), unique=True)
    experience: Mapped[int | None] = mapped_column(Integer)
    # The per-participant random order of survey_items.id, drawn once at start ("order" is an SQL keyword).
    item_order: Mapped[list[Any]] = mapped_column(JSON)
    strategy: Mapped[str | None] = mapped_column(Text)  # at most survey.STRATEGY_MAX_CHARS (the repository checks)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    # A researcher left this participant out of every statistic and export (Results); the answers stay stored.
    excluded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=expression.false())


class SurveyInvitation(Base):
    """A one-use link (?invite=token) sent to one person: it starts one participant, then only resumes them.

    UNIQUE(participant_id) and the conditional claim in the repository make two tabs opening one unused
    invitation at once still give a single participant.
    """

    __tablename__ = "survey_invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"), index=True)
    token: Mapped[str] = mapped_column(String(TOKEN_LEN), unique=True)
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participants.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column()


class Answer(Base):
    """A participant's verdict on one item; UNIQUE(participant, item) makes a retried submit harmless."""

    __tablename__ = "answers"
    __table_args__ = (
        CheckConstraint(_in("answer", TRUTH_VALUES), name="answer"),
        UniqueConstraint("participant_id", "item_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("survey_items.id"), index=True)
    answer: Mapped[str] = mapped_column(String(16))
    answered_at: Mapped[datetime] = mapped_column(default=utcnow)


class Slide(Base):
    """A whole-slide image the Slides page shows and annotators paint on: stitched from samples or generated
    here (a pyramidal TIFF under the data directory), or registered from a path on the server. `path` is the
    file's absolute path; size, levels and mpp are what OpenSlide read when the row was made, `provenance` the
    JSON sidecar the writer put beside the file (renal_ldm.slides.stitch.provenance_path), when there is one."""

    __tablename__ = "slides"
    __table_args__ = (
        CheckConstraint("width > 0 AND height > 0", name="size_positive"),
        CheckConstraint("patch_size > 0", name="patch_size_positive"),
        CheckConstraint("levels > 0", name="levels_positive"),
        CheckConstraint("mpp IS NULL OR mpp > 0", name="mpp_positive"),
        CheckConstraint(_in("kind", SLIDE_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN))
    path: Mapped[str] = mapped_column(String(PATH_LEN), unique=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    levels: Mapped[int] = mapped_column(Integer, server_default="1")
    mpp: Mapped[float | None] = mapped_column(Float)  # openslide.mpp-x; None when the file records none
    kind: Mapped[str] = mapped_column(String(16), server_default="stitched")
    patch_size: Mapped[int | None] = mapped_column(Integer)  # the side of a stitched slide's square patches
    caption: Mapped[str | None] = mapped_column(Text)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(NAME_LEN))


class SlideAnnotation(Base):
    """One annotator's mask of one class on one region of a slide: a PNG under the data directory (`mask_path`,
    relative to it, a name the product chose), how many pixels and components (glomeruli) it holds, and whether
    the annotator marked the region done. One row per slide, region, annotator and class, so a second
    annotator's mask never replaces the first; `revision` counts saves (a save that expected another revision
    is refused, so two tabs of one annotator cannot silently overwrite each other)."""

    __tablename__ = "slide_annotations"
    __table_args__ = (
        UniqueConstraint(
            "slide_id",
            "region_x",
            "region_y",
            "region_w",
            "region_h",
            "author",
            "class_id",
            name="uq_slide_annotations_region_author_class",
        ),
        CheckConstraint("region_x >= 0 AND region_y >= 0 AND region_w >= 0 AND region_h >= 0", name="region"),
        CheckConstraint("class_id >= 0 AND class_id <= 7", name="class_id"),
        CheckConstraint("pixels >= 0 AND components >= 0", name="counts"),
        Index("ix_slide_annotations_slide_author", "slide_id", "author"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id"), index=True)
    mask_path: Mapped[str] = mapped_column(String(PATH_LEN), unique=True)
    author: Mapped[str] = mapped_column(String(NAME_LEN))  # the annotator: sign-in name, or the name typed
    class_id: Mapped[int] = mapped_column(Integer, server_default="4")  # renal_ldm.classes id (4: Glomeruli)
    region_x: Mapped[int] = mapped_column(Integer, server_default="0")  # full-resolution pixels
    region_y: Mapped[int] = mapped_column(Integer, server_default="0")
    region_w: Mapped[int] = mapped_column(Integer, server_default="0")
    region_h: Mapped[int] = mapped_column(Integer, server_default="0")
    pixels: Mapped[int] = mapped_column(Integer, server_default="0")
    components: Mapped[int] = mapped_column(Integer, server_default="0")
    done: Mapped[bool] = mapped_column(Boolean, server_default=expression.false())
    revision: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Account(Base):
    """A person who signs in: a researcher (every page) or an annotator (the annotation pages)."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint(_in("role", ACCOUNT_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))  # salted scrypt (app/accounts.py)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class SignInSessionRow(Base):
    """A browser's sign-in, found again after a reload by its cookie; only the token's SHA-256 is stored."""

    __tablename__ = "sign_in_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(TOKEN_LEN), unique=True)
    account_name: Mapped[str] = mapped_column(String(NAME_LEN), index=True)
    role: Mapped[str] = mapped_column(String(16))
    credential_digest: Mapped[str] = mapped_column(String(TOKEN_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SignInFailure(Base):
    """Failed sign-ins in a row for one throttle key ("account:NAME" or "client:ADDRESS")."""

    __tablename__ = "sign_in_failures"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column()


class Evaluation(Base):
    """One run of an evaluation (caption accuracy, realism test, training-mix experiment) started on the
    Evaluate page: its parameters, its state, a summary of its numbers, and the folder holding its report."""

    __tablename__ = "evaluations"
    __table_args__ = (
        CheckConstraint(_in("kind", EVALUATION_KINDS), name="kind"),
        CheckConstraint(_in("state", EVALUATION_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="running")
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    report_dir: Mapped[str] = mapped_column(String(PATH_LEN), unique=True)  # relative to the data directory
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(NAME_LEN))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column()
