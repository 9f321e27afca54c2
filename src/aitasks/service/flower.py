"""How `aitasks run --flower` starts Flower, and when it refuses to.

Flower shows every job's arguments and can shut workers down, so beyond loopback it must ask for a
password: ``AITASKS_FLOWER_BASIC_AUTH=user:password`` (a comma list for several users). It is handed to
Flower as ``FLOWER_BASIC_AUTH`` in Flower's own environment, Flower's spelling of ``--basic_auth``, and the
broker URL (it carries the private Redis' password) as ``CELERY_BROKER_URL``, so neither shows in the
process list. Bound beyond loopback without a password, the service does not start.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aitasks.errors import ConfigurationError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_basic_auth(value: str) -> str:
    """``user:password[,user:password...]`` with neither part empty; raises ConfigurationError otherwise."""
    for pair in value.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user.strip() or not password:
            raise ConfigurationError("AITASKS_FLOWER_BASIC_AUTH must be user:password (a comma list for several "
                                     "users), neither part empty")
    return value


@dataclass(frozen=True)
class FlowerCommand:
    argv: list[str]
    env: dict[str, str]  # added to the service's environment for Flower alone: the secrets


def check_access(host: str, basic_auth: str | None) -> None:
    """Raises ConfigurationError when Flower would listen beyond loopback without a password, or the
    password setting is malformed: checked before anything starts."""
    if basic_auth is not None:
        check_basic_auth(basic_auth)
    elif not is_loopback(host):
        raise ConfigurationError(
            f"Flower would listen on {host} (AITASKS_HOST), beyond loopback, with no password: set "
            "AITASKS_FLOWER_BASIC_AUTH=user:password, or AITASKS_HOST=127.0.0.1")


def flower_command(python: str, broker_url: str, host: str, port: int, basic_auth: str | None) -> FlowerCommand:
    """The real Flower, on the same broker (it reads the workers' task events)."""
    check_access(host, basic_auth)
    # The broker URL carries the private Redis's password: in the environment, not the process list.
    argv = [python, "-m", "celery", "flower", f"--port={port}", f"--address={host}"]
    env = {"CELERY_BROKER_URL": broker_url}
    if basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = basic_auth
    return FlowerCommand(argv, env)
