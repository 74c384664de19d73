"""A row missing every identifier of a one-of rule is rejected with the rule once and the API's
reason (issue 13, "Rules the APIs enforce"; verifier 13c F12): the message repeated the column
list ("line_uid or ... needs at least one of: line_uid or ...") and said nothing of why."""

from __future__ import annotations

import pandas as pd
import pytest

from line_exports.destinations import get_destination
from line_exports.rules import validate

CASES = {  # case: (destination, settings, a row with no identifier, reason's words)
    "capi user": ("line_conversion", {}, {"deduplication_key": "k1", "event_type": "conversion",
                  "source_type": "web", "event_timestamp": 1_796_000_000, "email": "  ",
                  "external_id": "undefined"},
                  ("does not measure an event", '"User match"')),
    "linkedin user": ("linkedin", {"ad_account_id": "1", "segment_name": "s",
                      "ignore_invalid_records": True}, {"first_name": "Ann", "company": "Acme"},
                      ("both required", "DMP Segment Users")),
    "linkedin company": ("linkedin", {"ad_account_id": "1", "segment_name": "s",
                         "audience_type": "companies", "ignore_invalid_records": True},
                         {"company_name": " ", "company_email_domain": None},
                         ("name or a domain", "DMP Segment Companies")),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_row_with_no_identifier_says_the_rule_once_and_why(case: str) -> None:
    destination, settings, row, words = CASES[case]
    dest = get_destination(destination)
    config = dest.settings_class(**settings)
    ruleset = dest.ruleset(config)
    checked = validate(pd.DataFrame([row]), ruleset, config.model_dump(), timezone="UTC")
    (rule,) = ruleset.row_rules
    reject = checked.rejects[checked.rejects["rule"] == rule.name]
    assert len(reject) == 1 and checked.valid.empty, checked.rejects
    column, message = reject["column"].iloc[0], reject["message"].iloc[0]
    assert column == rule.describe()  # the rule, once: "email or google_aid or ..."
    assert message.startswith(f"{column} is missing, and one is needed: "), message
    assert message.count(column.split(" or ")[1]) == 1, message  # the list, only once
    assert all(word in message for word in words), message
