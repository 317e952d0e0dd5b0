"""Each service builds and deploys alone (its image is built from its own folder), so the few primitives both need
are kept as twin copies, one per service. These fail, naming the files, the moment a copy drifts."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCER = Path("producer-service/src/producer_service")
EMAIL = Path("email-service/src/email_service")
TWINS = ("logs.py", "envvars.py")


@pytest.mark.parametrize("module", TWINS)
def test_the_twin_copies_are_byte_identical(module):
    producer, email = PRODUCER / module, EMAIL / module
    ours, theirs = (ROOT / producer).read_bytes(), (ROOT / email).read_bytes()
    diff = difflib.unified_diff(ours.decode().splitlines(), theirs.decode().splitlines(), str(producer), str(email),
                                lineterm="")
    assert ours == theirs, f"{producer} and {email} differ: make the same change in both\n" + "\n".join(
        list(diff)[:40])


@pytest.mark.parametrize("module", TWINS)
def test_each_copy_names_its_twin_at_the_top(module):
    head = "".join((ROOT / PRODUCER / module).read_text().splitlines(keepends=True)[:2])
    assert head.startswith("#") and str(PRODUCER / module) in head and str(EMAIL / module) in head, (
        f"{PRODUCER / module}: the first comment must name both copies and this test")
    assert Path(__file__).relative_to(ROOT).as_posix() in head
