"""Hypothesis strategies for the fuzz tests: raw HTTP requests for the producer, AMQP messages for the consumer.

Hypothesis is used as a deterministic generator here (`collect`: fixed seed, generation phase only): the cases are
drawn first, then sent in one go against real processes, and every failing case is reported with what reproduces it.
"""

from __future__ import annotations

import contextlib
import json
import string
import struct
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import hypothesis
import jsonschema
import pamqp.encode
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st

from email_service.wire import (
    ATTEMPT_NUMBER_HEADER,
    CORRELATION_ID_HEADER,
    LAST_ERROR_HEADER,
    LEGACY_ATTEMPT_NUMBER_HEADER,
    REASON_HEADER,
)

CONSUMER_MAX_BODY = 64 * 1024  # email-service dead-letters larger bodies as invalid_event
PERMANENT = frozenset({"undecodable", "invalid_event", "unsupported_schema"})
_SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "producer-service" / "src" / "producer_service" / "contract"
                      / "user_signed_up.v1.schema.json").read_text())
_EVENT = jsonschema.Draft202012Validator(_SCHEMA)


def collect(strategy: st.SearchStrategy, count: int, seed: int) -> list:
    """`count` values drawn from `strategy`, the same ones for the same seed."""
    drawn: list = []

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @hypothesis.given(strategy)
    def draw(value) -> None:
        drawn.append(value)

    draw()
    return drawn


# -- shared pieces ----------------------------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
lone_surrogate = st.builds(lambda text, cs: text + cs, st.text(max_size=3), st.characters(categories=["Cs"]))
broken_utf8 = st.sampled_from([b"\xff", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf",
                               b"\xe2\x82", b"\xf4\x90\x80\x80"])


def deep_nesting(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


deep_bodies = st.builds(deep_nesting, st.integers(1_000, 8_000), st.sampled_from(["array", "object"]))


def dumps(value: object, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become broken UTF-8 when not escaped


# -- producer: raw requests -------------------------------------------------------------------------------------------

@dataclass
class RawRequest:
    body: bytes
    content_type: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)

    def describe(self) -> str:
        head = [f"-H 'Content-Type: {self.content_type.decode('latin-1')}'"] if self.content_type is not None else []
        head += [f"-H '{k}: {v.decode('latin-1')}'" for k, v in self.headers.items()]
        body = self.body if len(self.body) <= 100 else self.body[:60] + b"..." + self.body[-20:]
        return f"POST /v1/signups {' '.join(head)} body ({len(self.body)} bytes) {body!r}"


def _signup_like() -> st.SearchStrategy[dict]:
    emails = st.sampled_from(["ada@example.com", "a@b", "no-at-sign", "x@y.test", "é@example.com"]) | st.emails() \
        | json_values
    names = st.sampled_from(["Ada", " ", "", "A\nB", "x" * 101, "李雷", "A\u2028B"]) | st.text(max_size=120) \
        | json_values
    locales = st.sampled_from(["en", "zh-CN", "fr", "", "EN"]) | json_values
    extra = st.dictionaries(st.text(max_size=6) | lone_surrogate, json_values, max_size=2)
    return st.builds(lambda base, more: {**base, **more},
                     st.fixed_dictionaries({}, optional={"email": emails, "name": names, "locale": locales}), extra)


def _padded(size: int) -> bytes:
    body = b'{"email": "ada@example.com", "name": "Ada", "locale": "en"}'
    return body[:-1] + b" " * max(0, size - len(body)) + b"}"


_header_bytes = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128).strip())


def raw_requests(max_body: int) -> st.SearchStrategy[RawRequest]:
    bodies = st.one_of(
        st.binary(max_size=200),
        st.text(max_size=100).map(str.encode),
        st.builds(dumps, json_values, st.booleans()),
        st.builds(dumps, _signup_like(), st.booleans()),
        st.builds(lambda b, bad, at: b[:at] + bad + b[at:],
                  st.builds(dumps, _signup_like(), st.just(False)), broken_utf8, st.integers(0, 60)),
        deep_bodies,
        st.integers(max_body - 8, max_body + 64).map(_padded),
        # a few classics, as a fuzzing dictionary would have them
        st.sampled_from([b"", b"null", b"[]", b"{}", b'{"email": 1e400, "name": NaN}', b'{"\\ud800": 1}',
                         b'{"email":"ada@example.com","email":"x","name":"A"}', b'{"email":"ada@example.com"',
                         b"\xef\xbb\xbf" + _padded(0), b"[" * 5000 + b"]" * 5000]),
    )
    # Mostly a JSON content type, so most bodies get past the media type check to the parser.
    json_types = st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON",
                                  b"application/json; charset=\"utf-8\""])
    other_types = st.one_of(st.sampled_from([b"application/json;charset=latin-1", b"text/plain", b"",
                                             b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x"]),
                            st.none(), _header_bytes)
    content_types = st.integers(0, 9).flatmap(lambda n: json_types if n < 8 else other_types)
    headers = st.fixed_dictionaries({}, optional={
        "Idempotency-Key": _header_bytes
        | st.text(string.printable.strip(), min_size=250, max_size=260).map(str.encode),
        "X-Request-ID": _header_bytes,
    })
    return st.builds(RawRequest, bodies, content_types, headers)


# -- consumer: AMQP messages ------------------------------------------------------------------------------------------

def valid_event(event_id: str, email: str) -> dict:
    return {"schema_version": 1, "event_type": "user.signed_up", "event_id": event_id,
            "occurred_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "user": {"email": email, "name": "Fuzz Tester", "locale": "en"}}


def expected_reason(body: bytes) -> frozenset[str] | None:
    """The dead-letter reasons a body may get, by the contract (None: a valid event, the mail must go out)."""
    if len(body) > CONSUMER_MAX_BODY:
        return frozenset({"invalid_event"})
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return frozenset({"undecodable"})
    try:
        value = json.loads(text)
    except RecursionError:
        return PERMANENT  # too deep to decode: any permanent reason, at once (not retried until exhausted)
    except ValueError:
        return frozenset({"undecodable"})
    if not isinstance(value, dict):
        return frozenset({"invalid_event"})
    if "event_type" not in value or "schema_version" not in value:
        return frozenset({"invalid_event"})  # the wrong shape; unsupported_schema is for values present but unknown
    version = value.get("schema_version")
    if value.get("event_type") != "user.signed_up" or type(version) is not int or version != 1:
        return frozenset({"unsupported_schema"})
    return None if _EVENT.is_valid(value) else frozenset({"invalid_event"})


_MUTATIONS = [
    ("event_id", 42), ("event_id", "not-a-uuid"), ("event_id", str(uuid.uuid4()).upper()), ("occurred_at", "yesterday"),
    ("occurred_at", 1700000000), ("occurred_at", "2026-11-28T10:00:00"), ("user", []), ("user", None),
    ("user.email", "no-at-sign"), ("user.email", 7), ("user.name", ""), ("user.name", "A\r\nBcc: x@y.z"),
    ("user.name", "x" * 101), ("user.locale", "fr"), ("user.extra", True), ("extra", {}), ("schema_version", 2),
    ("schema_version", "1"), ("schema_version", True), ("schema_version", 1.0), ("event_type", "user.deleted"),
]


def _mutate(event: dict, mutation: tuple[str, object], drop: bool) -> dict:
    path, value = mutation
    target, key = (event["user"], path[5:]) if path.startswith("user.") else (event, path)
    if drop and key in target:
        del target[key]
    else:
        target[key] = value
    return event


@dataclass
class FuzzMessage:
    body: bytes
    properties: dict
    headers: dict
    number: int = -1

    @property
    def expected(self) -> frozenset[str] | None:
        return expected_reason(self.body)

    @property
    def valid_event_id(self) -> str | None:
        """The event id of a valid event (its mail must go out exactly once), None for any other body. Decided by
        the contract, not by the strategy that made the body: a mutation may leave an event valid (a supported
        locale, a dropped optional field, an unknown field)."""
        return None if self.expected is not None else str(json.loads(self.body)["event_id"])

    def describe(self) -> str:
        body = self.body if len(self.body) <= 120 else self.body[:80] + b"..." + self.body[-20:]
        text = (f"#{self.number}: body ({len(self.body)} bytes) {body!r}, properties {self.properties}, "
                f"headers {self.headers}")
        return text if len(text) <= 400 else text[:400] + "..."


class LongString(bytes):
    """A header value sent as an AMQP long string of exactly these bytes, broken UTF-8 included (pamqp itself sends
    only valid UTF-8 there)."""

    def __repr__(self) -> str:
        return f"longstr({bytes(self)!r})"


class Double(float):
    """A header value sent as an AMQP double, as other clients do (pamqp sends floats as 32-bit floats)."""

    def __repr__(self) -> str:
        return f"double({float(self)!r})"


@contextlib.contextmanager
def wire_types():
    """While publishing: encode LongString and Double values as such (only in this test process)."""
    original = pamqp.encode.encode_table_value

    def encode(value):
        if isinstance(value, LongString):
            return b"S" + struct.pack(">I", len(value)) + bytes(value)
        if isinstance(value, Double):
            return b"d" + struct.pack(">d", value)
        return original(value)

    pamqp.encode.encode_table_value = encode
    try:
        yield
    finally:
        pamqp.encode.encode_table_value = original


broken_longstr = st.builds(lambda text, bad: LongString(text.encode() + bad), st.text(max_size=10), broken_utf8)
# No NaN or infinity: RabbitMQ (Erlang has neither) refuses such a header by closing the channel, so no consumer
# can ever receive one.
floats32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
doubles = st.floats(allow_nan=False, allow_infinity=False).map(Double) | st.sampled_from([Double(1e300), Double(-1e39)])
header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | floats32 | doubles
    | st.text(max_size=30) | st.binary(max_size=30).map(bytearray) | broken_longstr,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=8),
                                                                inner, max_size=3),
    max_leaves=8)
attempt_values = st.one_of(
    st.sampled_from(["abc", "", "-1", "1e400", "9" * 40, "1", "٣"]), st.integers(-(2**63), 2**63 - 1),
    floats32, doubles, st.binary(max_size=5).map(bytearray), broken_longstr,
    st.booleans(), st.none(), st.lists(st.integers(0, 9), max_size=2))
shortstr = st.text(max_size=60)  # AMQP short strings: at most 255 bytes
headers = st.fixed_dictionaries({}, optional={
    ATTEMPT_NUMBER_HEADER: attempt_values,
    LEGACY_ATTEMPT_NUMBER_HEADER: attempt_values,
    "x-claim-waits": attempt_values,
    CORRELATION_ID_HEADER: header_values | st.text(min_size=200, max_size=2000),
    LAST_ERROR_HEADER: header_values,
    REASON_HEADER: st.sampled_from(["smtp_rejected", "bogus"]) | header_values,
}).flatmap(lambda known: st.dictionaries(
    st.text(string.ascii_lowercase + "-", min_size=1, max_size=20).map(lambda k: "x-fz-" + k), header_values,
    max_size=3).map(lambda extra: {**known, **extra}))
properties = st.fixed_dictionaries({}, optional={
    "content_type": st.sampled_from(["application/json", "text/plain", "application/xml", ""]) | shortstr,
    "content_encoding": st.sampled_from(["utf-8", "gzip", "latin-1", ""]) | shortstr,
    "message_id": st.sampled_from(["", "not-a-uuid"]) | shortstr,
    "correlation_id": shortstr,
    "type": st.sampled_from(["user.signed_up", "user.deleted", ""]),
    "app_id": shortstr,
    "timestamp": st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)),
    "delivery_mode": st.sampled_from([1, 2]),
})


def amqp_messages() -> st.SearchStrategy[FuzzMessage]:
    def valid(props: dict, hdrs: dict) -> FuzzMessage:
        event_id = str(uuid.uuid4())
        return FuzzMessage(json.dumps(valid_event(event_id, f"fuzz-{event_id[:8]}@example.com")).encode(), props, hdrs)

    def mutated(mutation, drop, props, hdrs) -> FuzzMessage:
        event = _mutate(valid_event(str(uuid.uuid4()), "mutant@example.com"), mutation, drop)
        return FuzzMessage(json.dumps(event).encode(), props, hdrs)

    def broken(bad: bytes, at: int, props: dict, hdrs: dict) -> FuzzMessage:
        body = json.dumps(valid_event(str(uuid.uuid4()), "broken@example.com")).encode()
        return FuzzMessage(body[:at] + bad + body[at:], props, hdrs)

    large = st.one_of(
        st.integers(CONSUMER_MAX_BODY + 1, CONSUMER_MAX_BODY + 100).map(lambda n: b"{" + b" " * (n - 2) + b"}"),
        st.integers(100_000, 2_000_000).map(lambda n: b"\x00\xff" * (n // 2)),
        st.just(json.dumps(valid_event(str(uuid.uuid4()), "big@example.com") | {"pad": "x" * 70_000}).encode()))
    raw = st.one_of(
        st.binary(max_size=300), st.text(max_size=200).map(str.encode), st.builds(dumps, json_values, st.booleans()),
        deep_bodies, large, st.sampled_from([b"", b" ", b"null", b"{}", b"[]", b"\xef\xbb\xbf{}", b"NaN"]))
    return st.one_of(
        st.builds(valid, properties, headers),
        st.builds(mutated, st.sampled_from(_MUTATIONS), st.booleans(), properties, headers),
        st.builds(broken, broken_utf8, st.integers(0, 200), properties, headers),
        st.builds(lambda body, props, hdrs: FuzzMessage(body, props, hdrs), raw, properties, headers),
    )
