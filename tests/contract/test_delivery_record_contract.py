"""The delivery record is written by the email service and read by the producer (and described in openapi.json):
the key, the field names and the states must agree in all three, and the OpenAPI description must name every
route the producer serves."""

from __future__ import annotations

import json
from importlib import resources

from email_service import status as email_status
from email_service.dedup import CLAIM_SCRIPT
from producer_service import status as producer_status
from producer_service.app import create_app
from tests.support.env import producer_settings

OPENAPI = json.loads(resources.files("producer_service").joinpath("openapi.json").read_text())
RECORD = OPENAPI["components"]["schemas"]["DeliveryRecord"]


def test_both_services_use_the_same_key_and_fields():
    assert producer_status.RECORD_KEY == email_status.RECORD_KEY
    assert producer_status.FIELDS == email_status.FIELDS
    assert producer_status.EVENT_ID.pattern == email_status.EVENT_ID.pattern


def test_openapi_describes_every_field_and_state():
    assert set(RECORD["properties"]) == {"event_id", "legacy", *email_status.FIELDS}
    assert RECORD["properties"]["status"]["enum"] == [s.value for s in email_status.DeliveryStatus]
    assert not set(email_status.INTERNAL_FIELDS) & set(RECORD["properties"])


def test_the_claim_script_writes_only_known_fields_and_states():
    for name in ("status", "last_update", "first_update", "locale", "attempts"):
        assert f"'{name}'" in CLAIM_SCRIPT
    for state in ("'sending'", "'duplicate_skipped'"):
        assert state.strip("'") in {s.value for s in email_status.DeliveryStatus}


def test_openapi_names_every_route_the_producer_serves():
    app = create_app(producer_settings("amqp://guest:guest@127.0.0.1:1/"))
    served = {route.path for route in app.routes} - {"/openapi.json"}
    assert served == set(OPENAPI["paths"])
    lookup = OPENAPI["paths"]["/v1/signups/{event_id}"]["get"]
    assert set(lookup["responses"]) == {"200", "400", "401", "404", "501", "503"}
    assert lookup["security"] == [{"statusToken": []}]
