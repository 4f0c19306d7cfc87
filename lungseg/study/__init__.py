"""The blinded clinician preference study: store, design, access control, CSV and report.

Typical use from the app (no Streamlit in this package)::

    store = StudyStore()                                   # $LUNGSEG_DB or data/lungseg.db
    session = authenticate_rater(store, token)             # token from the ?token=... link
    item = store.next_item_for(session)                    # None when the rater is done
    store.cast_vote(session, item.item_id, "left", response_ms=4200)
    report = study_report(store, "main study"); figures = report_figures(report)

Reviews of any opened case (the viewer's accept/reject), in or outside a study::

    store.record_case_review(case.key, case.label, "local user",
                             [ContourDecision("automatic", True, lesions=(1,)), ContourDecision("manual", False)],
                             source=case.source)
    store.latest_case_review(case.key, source=case.source)
"""

from lungseg.study.access import (
    AccessDenied,
    AccountLocked,
    AdminSession,
    AuthError,
    Invitation,
    RaterSession,
    TokenExpired,
    TokenRevoked,
    UnknownToken,
    admin_login,
    authenticate_rater,
    backup,
    set_admin_password,
)
from lungseg.study.csvio import ImportResult, export_votes, import_votes, read_votes_csv, votes_csv_text, write_votes_csv
from lungseg.study.design import (
    DEFAULT_INSTRUCTIONS,
    SPECIALTIES,
    CaseMetadata,
    CaseSpec,
    DesignParams,
    ItemSpec,
    StudyError,
    assign,
    plan_items,
)
from lungseg.study.report import (
    ReportOptions,
    build_report,
    fleiss_kappa,
    format_report,
    report_figures,
    study_report,
    wilson_interval,
)
from lungseg.study.reviews import AddedLesion, CaseReview, ContourDecision, study_verdict
from lungseg.study.store import SCHEMA_VERSION, ItemView, Progress, RaterInfo, Review, Study, StudyStore, Vote, default_db_path

__all__ = [
    "AccessDenied",
    "AccountLocked",
    "AddedLesion",
    "AdminSession",
    "AuthError",
    "CaseMetadata",
    "CaseReview",
    "CaseSpec",
    "ContourDecision",
    "DEFAULT_INSTRUCTIONS",
    "DesignParams",
    "ImportResult",
    "Invitation",
    "ItemSpec",
    "ItemView",
    "Progress",
    "RaterInfo",
    "RaterSession",
    "ReportOptions",
    "Review",
    "SCHEMA_VERSION",
    "SPECIALTIES",
    "Study",
    "StudyError",
    "StudyStore",
    "TokenExpired",
    "TokenRevoked",
    "UnknownToken",
    "Vote",
    "admin_login",
    "assign",
    "authenticate_rater",
    "backup",
    "build_report",
    "default_db_path",
    "export_votes",
    "fleiss_kappa",
    "format_report",
    "import_votes",
    "plan_items",
    "read_votes_csv",
    "report_figures",
    "set_admin_password",
    "study_report",
    "study_verdict",
    "votes_csv_text",
    "wilson_interval",
    "write_votes_csv",
]
