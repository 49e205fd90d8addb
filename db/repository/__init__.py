"""The functions pages call: each one short transaction, returning frozen dataclasses (never live ORM rows).

Every function takes an optional keyword `url` (default: DATABASE_URL, else the SQLite file in the data
directory). Errors a user can cause are ValueErrors naming the bad value (NotFoundError is one too).
"""

from types import ModuleType as _ModuleType

from db.repository._common import NotFoundError
from db.repository.accounts import (
    Account,
    SignInSession,
    account_name,
    add_account,
    clear_sign_in_failures,
    count_accounts,
    create_sign_in_session,
    delete_expired_sessions,
    delete_sign_in_session,
    get_credentials,
    get_sign_in_session,
    list_accounts,
    record_sign_in_failure,
    remove_account,
    set_password_hash,
    sign_in_failures,
)
from db.repository.annotations import (
    Annotation,
    StaleAnnotationError,
    get_annotation,
    list_annotations,
    save_annotation,
    set_done,
    slide_annotators,
)
from db.repository.evaluations import (
    Evaluation,
    add_evaluation,
    finish_evaluation,
    get_evaluation,
    list_evaluations,
)
from db.repository.invitations import Invitation, create_invitations, list_invitations
from db.repository.models_registry import (
    ModelEntry,
    ModelPathError,
    get_model,
    list_models,
    register_model,
    remove_model,
)
from db.repository.participants import (
    InvitationStatus,
    Participant,
    PublicItem,
    SharedLinkOffError,
    SurveyFullError,
    finish_participant,
    get_invitation,
    get_participant,
    next_unanswered_item,
    record_answer,
    set_experience,
    set_strategy,
    start_invited_participant,
    start_participant,
)
from db.repository.presets import Preset, delete_preset, get_preset, list_presets, save_preset
from db.repository.samples import (
    NewSample,
    Sample,
    add_sample,
    add_samples,
    count_samples,
    delete_sample,
    get_sample,
    list_samples,
    sample_model_names,
)
from db.repository.slides import Slide, add_slide, delete_slide, find_slide_by_path, get_slide, list_slides
from db.repository.surveys import (
    AnswerRecord,
    ImportSummary,
    Survey,
    SurveyItem,
    SurveyParticipant,
    create_survey,
    duplicate_survey,
    get_survey,
    get_survey_by_token,
    import_responses,
    list_surveys,
    set_participant_cap,
    set_participant_excluded,
    set_shared_link,
    set_survey_status,
    survey_answers,
    survey_items_with_truth,
    survey_participants,
)

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
