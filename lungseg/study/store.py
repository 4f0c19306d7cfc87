"""The preference-study database: one SQLite file in WAL mode, opened through sqlite-utils.

Every write is one ``BEGIN IMMEDIATE`` transaction (taking the write lock up front, so
concurrent writers queue on ``busy_timeout`` instead of failing half-way), foreign keys are on,
and the schema carries its own version, brought up to date on open (:mod:`.schema`).

Integrity is also enforced by the schema, not only by this code: a vote's rater, item and
study must agree (composite foreign keys), the item must be in that rater's assignment, the
chosen source must follow from the chosen side, and ``UNIQUE(study_id, rater_id, item_id)``
makes a second vote on an item impossible (:meth:`StudyStore.cast_vote` returns the first).

:class:`StudyStore` is assembled from one module per concern, each building on the one before:

- :mod:`.core`: the connection, transactions, the audit log;
- :mod:`.studies`: studies, cases, items;
- :mod:`.raters`: raters, invitations and links, rater and admin session checks;
- :mod:`.votes`: the rating task and the votes table;
- :mod:`.reviews`: clinical verdicts on study cases and accept/reject reviews of any case;
- :mod:`.structures`: versions of a case's structures, decisions on them, editing activity;
- :mod:`.readings`: contouring studies (readers' readings in the scratch and assisted arms).
"""

from __future__ import annotations

from lungseg.study.core import MAX_COMMENT, Clock, StoreCore
from lungseg.study.raters import RaterInfo
from lungseg.study.readings import Contouring
from lungseg.study.reviews import CaseReview, ContourDecision, Review
from lungseg.study.schema import (
    DEFAULT_DB,
    MIGRATIONS,
    SCHEMA_VERSION,
    default_db_path,
    iso,
    migrate,
    schema_version,
    utc_now,
)
from lungseg.study.structures import Structuring
from lungseg.study.studies import Study
from lungseg.study.votes import ItemView, Progress, Vote

__all__ = [
    "CaseReview", "Clock", "ContourDecision", "DEFAULT_DB", "ItemView", "MAX_COMMENT", "MIGRATIONS", "Progress",
    "RaterInfo", "Review", "SCHEMA_VERSION", "StoreCore", "Study", "StudyStore", "Vote", "default_db_path", "iso",
    "migrate", "schema_version", "utc_now",
]


class StudyStore(Contouring, Structuring):
    """The preference-study database (and the clinical reviews of any case).

    ``path`` defaults to :func:`default_db_path`; ``":memory:"`` gives a throw-away database.
    One store may be shared between threads (a lock serialises its use of the connection);
    each process opens its own.  ``clock`` returns the current aware UTC time (injectable for
    tests of expiry and login locks).
    """
