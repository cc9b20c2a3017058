"""Signed unsubscribe tokens: the user id, signed with SECRET_KEY (no expiry: an old newsletter's
link must still work). A token cannot be forged nor turned into another user's."""

from django.core import signing

SALT = "newsletters.unsubscribe"


def unsubscribe_token(user_id: int) -> str:
    return signing.dumps(user_id, salt=SALT, compress=False)


def user_of(token: str) -> int | None:
    try:
        return int(signing.loads(token, salt=SALT))
    except (signing.BadSignature, TypeError, ValueError):
        return None
