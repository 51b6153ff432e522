"""The platform's own git remote (``python -m gitserver``): what the pipeline needs to read it.

Users without GitHub push to ``<OFC_GIT_PUBLIC_URL>/git/<owner>/<repo>.git``; the push
event that follows names that URL as ``repository.clone_url``. The repositories are
private, and the platform clones them as user :data:`READ_USER` with the password
:func:`read_token` gives for that one repository, the way it clones a GitHub repository
as ``x-access-token`` with an installation token. Nobody stores these tokens: both sides
derive them from the payload secret.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["READ_USER", "read_token"]

READ_USER = "x-access-token"


def read_token(payload_secret: str, owner: str, repo: str) -> str:
    """The password that lets :data:`READ_USER` fetch ``owner/repo`` (and nothing else).

    It is HMAC-SHA256, keyed with the payload secret, of ``git-read:<owner>/<repo>`` in
    lower case (the git remote matches names without regard to case), as 64 hex digits.
    It reads one repository, never pushes, and changes only when the payload secret does.

    >>> read_token("s3cret", "Alice", "Fns") == read_token("s3cret", "alice", "fns")
    True
    >>> len(read_token("s3cret", "alice", "fns"))
    64
    """
    message = f"git-read:{owner.lower()}/{repo.lower()}".encode()
    return hmac.new(payload_secret.encode(), message, hashlib.sha256).hexdigest()
