"""The deployment's secret key: what the tenants' webhook signing secrets are derived from.

It is kept outside Redis, so whoever can read Redis (its append-only file, a dump, a stray client) does
not learn the secrets: AITASKS_SECRET_KEY when set (the same on every host that shares one Redis), else
``<data_dir>/secret.key`` (0600), made on first use by whichever process needs it first.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from aitasks.errors import ConfigurationError
from aitasks.settings import Settings


def secret_key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return _key_file(settings.secret_key_file)


def _key_file(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name, then linked into place: two processes starting at once
        # agree on the first one's key, and nobody ever reads a half-written file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if not key:
        raise ConfigurationError(f"{path} is empty: delete it (webhook secrets change) or set AITASKS_SECRET_KEY")
    return key.encode()
