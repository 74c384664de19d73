"""LinkedIn: the DMP segment's status and matched audience.

Source: ``GET /rest/dmpSegments/{id}`` (Microsoft Learn, "DMP Segments" and "DMP Segment
Destinations"). ``inputCount`` is on the segment; its ``destinations[]`` entry for ``LINKEDIN``
has ``status`` (``BUILDING``, ``UPDATING``, ``READY``, ``FAILED``, ``ERROR``, ``EXPIRED``,
``ARCHIVED``) and, once built, ``matchedCount`` (matches of the last seven days) and
``audienceSize`` (the audience available for targeting). LinkedIn's match rate is
``matchedCount / inputCount``; initial processing "can take up to 48 hours".
"""

from __future__ import annotations

import dagster as dg

from line_exports.destinations.linkedin import LinkedInResource
from line_exports.http import ApiError
from line_exports.results_back.observed import RETRY, Observed, SentExport


def observe(resource: LinkedInResource, sent: SentExport, now: float) -> Observed:
    observed = Observed()
    segment_id = sent.get("segment_id")
    if segment_id is None:
        observed.problems.append(
            "no send of this export names its DMP segment (segment_id): nothing to observe"
        )
        return observed
    try:
        segment = resource.get_client(RETRY).segment(str(segment_id))
    except ApiError as exc:
        observed.problems.append(f"segment {segment_id}: {exc}")
        return observed
    linkedin = [d for d in segment.get("destinations") or [] if d.get("destination") == "LINKEDIN"]
    target = linkedin[0] if linkedin else {}
    status = str(target.get("status") or "UNKNOWN")
    observed.segment_status = status
    observed.metadata["segment_id"] = str(segment_id)
    if "segment_id" in sent.named_in:  # the latest send only removed members
        observed.metadata["segment_named_in_run"] = sent.named_in["segment_id"]
    created = segment.get("created")
    if created is not None:
        observed.segment_age_hours = max(0.0, (now - int(created) / 1000) / 3600)
    inputs = segment.get("inputCount")
    observed.metadata["segment_status"] = status
    if observed.segment_age_hours is not None:
        observed.metadata["segment_age_hours"] = dg.MetadataValue.float(
            round(observed.segment_age_hours, 2)
        )
    if inputs is not None:
        observed.metadata["input_count"] = dg.MetadataValue.int(int(inputs))
    for name, key in (("matchedCount", "matched_count"), ("audienceSize", "audience_size")):
        if target.get(name) is not None:
            observed.metadata[key] = dg.MetadataValue.int(int(target[name]))
    matched = target.get("matchedCount")
    if matched is not None and inputs:
        observed.match_rate = int(matched) / int(inputs)
        observed.match_basis = f"matchedCount {int(matched):,} / inputCount {int(inputs):,}"
    return observed
