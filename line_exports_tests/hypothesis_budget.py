"""How many examples each property test draws: a quick count for every suite run, the full count
with ``HYPOTHESIS_PROFILE=thorough``.

The suite (README "Quick start", ``.ci/run``) draws each property test's ``quick`` count: enough
for the property's input space as that test's strategy shapes it, and every property still runs.
Under ``CI`` Hypothesis derandomizes, so those examples are the same on every run; elsewhere each
run draws new ones. ``HYPOTHESIS_PROFILE=thorough`` (conftest loads the named profile) draws each
test's ``thorough`` count, the larger budget the tests had before the suite was trimmed for time;
run it after changing a rule, a matcher or a phone route::

    HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest -q -n auto \\
        line_exports_tests/test_rules_vectorized.py line_exports_tests/test_phones.py
"""

from __future__ import annotations

from hypothesis import settings

THOROUGH = "thorough"


def examples(quick: int, thorough: int) -> int:
    """``max_examples`` for one property test: ``thorough`` under the thorough profile, else
    ``quick``. Read when the test module is imported (after conftest loaded the profile)."""
    return thorough if settings.get_current_profile_name() == THOROUGH else quick
