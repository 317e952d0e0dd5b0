"""The OpenAPI description served at /openapi.json: openapi.json beside this module, with the signup's `locale`
listing exactly the locales this process accepts (LOCALES, the first one the default).

openapi.json itself lists the default LOCALES; tests/contract checks that it does, so the file read without a
running service says what a default deployment accepts.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SPEC = json.loads(resources.files("producer_service").joinpath("openapi.json").read_bytes())


def locale_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The `locale` property of the Signup schema (the one place the spec names locales)."""
    schema: dict[str, Any] = spec["components"]["schemas"]["Signup"]["properties"]["locale"]
    return schema


def document(locales: tuple[str, ...]) -> bytes:
    """The spec as served, encoded once at start-up."""
    spec = json.loads(json.dumps(SPEC))  # a deep copy: SPEC stays the file as shipped
    locale_schema(spec).update(enum=list(locales), default=locales[0])
    return json.dumps(spec, ensure_ascii=False, indent=2).encode("utf-8")
