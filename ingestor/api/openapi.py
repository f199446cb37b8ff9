"""``python -m ingestor.api.openapi``: print the application's OpenAPI schema (docs/api/openapi.json is this
output, checked by tests/test_api.py)."""

from __future__ import annotations

import json

from ingestor.api.app import create_app
from ingestor.api.auth import Tokens
from ingestor.api.config import HttpConfig
from ingestor.api.state import ApiState


def schema() -> dict[str, object]:
    return create_app(ApiState(HttpConfig(), "postgresql:///unused", tokens=Tokens())).openapi()


if __name__ == "__main__":
    print(json.dumps(schema(), indent=2, sort_keys=True))
