"""Task tokens of approval steps, derived from a server secret so that the database holds none.

A token is HMAC-SHA256(key, invocation id, step handle, a random nonce): 256 bits a database
reader cannot compute without the key. The database keeps the SHA-256 of the token (the
lookup key of `resume`) and the *seal*, `<key id>.<nonce>`, from which the service derives the
token again for status and the `step.waiting` callback (both behind the API key or signed).
So a leaked database (a backup, a read replica, an SQL injection elsewhere) resumes nothing.

The key comes from `CHAINRUNNER_TASK_TOKEN_SECRET` if set, else from
`CHAINRUNNER_WEBHOOK_SECRET` (domain-separated: a derived key, never the signing key itself).
Either may list several secrets, space-separated: the first makes new tokens, every one is
tried for old ones (rotation); a token made with a secret no longer listed can still resume
(its hash is stored) but can no longer be shown.
"""

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from chainlets.errors import ConfigurationError
from chainlets.service.webhooks import SECRET_ENV, decode_secret

__all__ = ["TOKEN_SECRET_ENV", "TaskTokens", "hash_token", "reveal_event"]

TOKEN_SECRET_ENV = "CHAINRUNNER_TASK_TOKEN_SECRET"
_CONTEXT = b"chainrunner task tokens v1"
_NONCE_BYTES = 16


def hash_token(token: str) -> str:
    """What the store looks a token up by: its SHA-256 (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TaskTokens:
    """Makes and re-derives task tokens with one or more keys (the first makes new ones)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ConfigurationError("task tokens need at least one key")
        derived = [hmac.new(key, _CONTEXT, hashlib.sha256).digest() for key in keys]
        self._keys = {hashlib.sha256(key).hexdigest()[:8]: key for key in derived}
        self._current = hashlib.sha256(derived[0]).hexdigest()[:8]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "TaskTokens | None":
        """From CHAINRUNNER_TASK_TOKEN_SECRET, else CHAINRUNNER_WEBHOOK_SECRET; None when
        neither is set (approval steps are then refused, naming both)."""
        for name in (TOKEN_SECRET_ENV, SECRET_ENV):
            words = environ.get(name, "").split()
            if words:
                return cls([decode_secret(word, name if len(words) == 1
                                          else f"secret {i} of {name}")
                            for i, word in enumerate(words, start=1)])
        return None

    def _token(self, key: bytes, invocation_id: str, handle: str, nonce: str) -> str:
        message = "\0".join((invocation_id, handle, nonce)).encode()
        return _b64(hmac.new(key, message, hashlib.sha256).digest())

    def mint(self, invocation_id: str, handle: str) -> tuple[str, str]:
        """A new token for the step and its seal (what the database keeps to derive it)."""
        nonce = _b64(secrets.token_bytes(_NONCE_BYTES))
        token = self._token(self._keys[self._current], invocation_id, handle, nonce)
        return token, f"{self._current}.{nonce}"

    def reveal(self, invocation_id: str, handle: str, seal: str) -> str:
        """The token a seal stands for; ConfigurationError when its secret is gone."""
        key_id, _, nonce = seal.partition(".")
        key = self._keys.get(key_id)
        if key is None:
            raise ConfigurationError(
                f"step `{handle}` of invocation `{invocation_id}`: its task token was made "
                f"with a secret no longer set (key id {key_id}); list that secret again after "
                f"the current one in {TOKEN_SECRET_ENV} (or {SECRET_ENV}) to show the token")
        return self._token(key, invocation_id, handle, nonce)

    def matches(self, token: str, invocation_id: str, handle: str, seal: str) -> bool:
        """Whether `token` is the one the seal stands for, compared in constant time (a seal
        whose secret is gone cannot be checked: its stored hash already matched)."""
        key_id, _, nonce = seal.partition(".")
        key = self._keys.get(key_id)
        if key is None:
            return True
        expected = self._token(key, invocation_id, handle, nonce)
        return hmac.compare_digest(expected.encode(), token.encode())


def reveal_event(body: dict[str, Any], tokens: TaskTokens | None) -> dict[str, Any]:
    """A stored event's body as sent and listed: a `step.waiting` event's token derived from
    the seal stored in its place."""
    seal = body.pop("task_token_seal", None)
    if seal is not None:
        if tokens is None:
            raise ConfigurationError(f"event `{body['id']}`: its task token is derived from "
                                     f"{TOKEN_SECRET_ENV} or {SECRET_ENV}, and neither is set")
        body["task_token"] = tokens.reveal(body["invocation_id"], body["step"], seal)
    return body
