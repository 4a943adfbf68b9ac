"""Sorting the rows a read could not see: late commit, updated in place, unchanged, quarantined."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services_sync.core.reconcile import (
    NAMED,
    classify_late_rows,
    fingerprint,
    in_place_warning,
    late_commit_problem,
    quiet_notes,
    sent_records,
)
from services_sync.core.transform import to_record, transform_rows

H = datetime(2025, 5, 14, 10, tzinfo=UTC)


def row(rid, status="1", minute=5, sid="water"):
    return (sid, rid, H - timedelta(days=1), status, H + timedelta(minutes=minute))


def sent(*rows):
    return sent_records([[to_record(r) for r in rows]])


def classify(rows, sent_map, quarantined=(), **kwargs):
    return classify_late_rows(rows, sent_map, set(quarantined), **kwargs)


def test_a_key_never_sent_is_a_late_commit():
    late = classify([row("LATE-1")], sent(row("R1")))
    assert [r.request_id for r in late.late_commits] == ["LATE-1"]
    assert late.late_commit_count == 1
    assert late.updated_in_place == late.unchanged == late.quarantined == []


def test_same_key_same_stamp_other_content_is_updated_in_place():
    late = classify([row("R1", status="7")], sent(row("R1", status="1")))
    assert late.late_commits == []
    (item,) = late.updated_in_place
    assert item.changes == ("status_id 1 -> 7",)


def test_same_key_same_content_is_unchanged():
    late = classify([row("R1")], sent(row("R1")))
    assert [r.request_id for r in late.unchanged] == ["R1"]
    assert late.late_commit_count == 0


def test_same_key_with_another_stamp_is_a_version_committed_late():
    late = classify([row("R1", status="3", minute=50)], sent(row("R1", minute=5)))
    assert [r.request_id for r in late.late_commits] == ["R1"]


def test_a_stamp_changed_within_the_same_second_is_still_in_place():
    moved = ("water", "R1", H, "7", H + timedelta(minutes=5, microseconds=500_000))
    late = classify([moved], sent(row("R1")))
    assert [r.request_id for r in late.updated_in_place] == ["R1"]


def test_a_quarantined_row_version_is_reported_as_quarantined_not_late():
    bad = row("BAD-1", status="open")
    (rejected,) = transform_rows([bad]).rejected
    assert fingerprint(bad) == rejected.fingerprint  # the quarantine's own identity
    late = classify([bad], {}, quarantined={rejected.fingerprint})
    assert [r.request_id for r in late.quarantined] == ["BAD-1"]
    assert late.late_commit_count == 0


def test_a_bad_row_not_quarantined_and_never_sent_is_a_late_commit():
    late = classify([row("BAD-1", status="open")], {}, quarantined={"another"})
    assert [r.request_id for r in late.late_commits] == ["BAD-1"]


def test_a_sent_row_updated_in_place_into_a_bad_one_says_it_now_breaks_the_contract():
    late = classify([row("R1", status="open")], sent(row("R1")))
    (item,) = late.updated_in_place
    assert item.changes == ("now breaks the contract: status_id is not an integer: 'open'",)


def test_a_row_without_ids_is_never_matched_with_a_sent_record():
    late = classify([(None, None, H, "1", H + timedelta(minutes=5))], sent(row("R1")))
    assert late.late_commit_count == 1


def test_integer_ids_match_the_stringified_sent_ids():
    late = classify(
        [(7, 42, H, 1, H + timedelta(minutes=5))], sent((7, 42, H, 1, H + timedelta(minutes=5)))
    )
    assert len(late.unchanged) == 1


def test_naive_stamps_are_compared_in_the_naive_zone():
    zone = ZoneInfo("Europe/Paris")
    naive = ("water", "R1", datetime(2025, 5, 13, 12), "1", datetime(2025, 5, 14, 12, 5))
    sent_map = sent_records([[to_record(naive, zone)]])
    assert len(classify([naive], sent_map, naive_timezone=zone).unchanged) == 1
    assert classify([naive], sent_map).late_commit_count == 1  # read in UTC: another instant


def test_rows_beyond_those_classified_count_as_late_commits():
    late = classify([row("R1")], sent(row("R1")), total=4)
    assert (late.unclassified, late.late_commit_count) == (3, 3)
    assert "3 row(s) in the interval were committed after it was read" in late_commit_problem(late)


def test_the_alarm_names_only_late_commits_and_the_warning_names_cause_fix_and_changes():
    late = classify(
        [row("R1", status="7"), row("LATE-1", sid="roads", minute=59), row("R2")],
        sent(row("R1"), row("R2")),
    )
    alarm = late_commit_problem(late)
    assert alarm.startswith("1 row(s) in the interval were committed after it was read")
    assert "LATE-1 (roads) at 2025-05-14T10:59:00+00:00" in alarm
    assert "R1" not in alarm and "R2" not in alarm
    warning = in_place_warning(late)
    assert warning.startswith("1 row(s) were updated in place without touching last_modified_date")
    assert "R1 (water) at 2025-05-14T10:05:00+00:00 (status_id 1 -> 7)" in warning
    assert "BEFORE UPDATE trigger" in warning and "clear this run" in warning
    assert "Not a late commit" in warning
    (note,) = quiet_notes(late)
    assert note.startswith("1 row(s) were rewritten after the read with the content that was sent")


def test_nothing_to_say_when_nothing_was_found():
    late = classify([], {})
    assert late_commit_problem(late) is None
    assert in_place_warning(late) is None
    assert quiet_notes(late) == []


def test_messages_name_a_bounded_number_of_rows():
    many = [row(f"L{i:03d}", minute=i % 60) for i in range(NAMED + 5)]
    alarm = late_commit_problem(classify(many, {}, total=NAMED + 10))
    assert f"{NAMED + 10} row(s)" in alarm
    assert alarm.count(" at 2025-") == NAMED
    assert "and 10 more" in alarm
