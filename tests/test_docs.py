"""The docs stay true to the code: every setting is documented, every documented path is served."""

import re
from pathlib import Path

from aitasks.api.app import create_app
from aitasks.client import protocol
from aitasks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_and_nothing_else():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(AITASKS_[A-Z0-9_]+)`", readme))
    actual = {f"AITASKS_{name.upper()}" for name in Settings.model_fields}
    actual |= set(protocol.CLIENT_VARIABLES)  # the CLI's and the Python client's, not the service's
    assert actual - documented == set(), "settings missing from the README"
    assert documented - actual == set(), "README documents settings that do not exist"


def ws_paths(app) -> set[str]:
    """WebSocket routes are not in OpenAPI; find them on the included routers."""
    from aitasks.api.routes import compat, stream

    return {getattr(r, "path", "") for module in (stream, compat) for r in module.router.routes}


def test_documented_http_paths_exist_in_the_openapi_schema(monkeypatch):
    monkeypatch.setenv("AITASKS_REDIS_URL", "redis://127.0.0.1:1/0")  # building the schema needs no Redis
    app = create_app(Settings())
    served = set(app.openapi()["paths"]) | {getattr(r, "path", "") for r in app.routes} | ws_paths(app)
    text = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"`(?:GET|POST|DELETE|WS) (/[^`\s]*)`", text))
    assert documented, "no paths found in docs/api.md"
    missing = {p for p in documented if p not in served}
    assert missing == set()


def test_readme_opens_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:15])
    assert "make run" in head and "make test" in head
