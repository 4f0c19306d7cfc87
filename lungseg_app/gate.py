"""Who is using the app: the signed-in admin in department mode, else the single local user."""

from __future__ import annotations


from lungseg.review import LOCAL_USER

from . import cases


def require_user():
    """The reviewer to record decisions under.

    Department mode: the signed-in account (an :class:`~lungseg.study.AdminSession`); before sign-in the
    page shows only the sign-in form, so no image and no case list reaches the browser.  Otherwise
    (a localhost single-user install): ``"local user"``.
    """
    if not cases.department_mode():
        return LOCAL_USER
    from . import auth

    return auth.require_admin()


def reviewer_name(user) -> str:
    return user if isinstance(user, str) else f"{user.username}"
