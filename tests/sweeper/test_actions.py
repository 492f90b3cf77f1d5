"""Actions on rejected objects, called directly: quarantine, delete, restore, finishing pending ones.
Real folders, real SQLite."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from fediguard.storage.local import LocalSource
from fediguard.sweeper.actions import ActionTaker, conflict_key, in_quarantine, restore
from fediguard.sweeper.state import SweepState


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def source(store: Path, tmp_path: Path) -> LocalSource:
    return LocalSource(store, quarantine_dir=tmp_path / "quarantine")


async def flagged(source: LocalSource, state: SweepState, key: str, action: str) -> tuple[int, int]:
    """Record the object under ``key`` (already in the folder) as rejected, ``action`` pending, as a
    sweep does before acting. Gives the source's id and the object's."""
    source_id = state.source_id(source.url, {})
    (obj,) = [o async for o in source.list() if o.key == key]
    quarantine_key = key if action == "quarantine" else None
    object_id = state.save(source_id, obj, status="scanned", verdict="reject", action=action,
                           quarantine_key=quarantine_key)  # fmt: skip
    return source_id, object_id


async def test_quarantine_then_restore(
    source: LocalSource, state: SweepState, store: Path, tmp_path: Path
) -> None:
    (store / "a").mkdir()
    (store / "a" / "bad.png").write_bytes(b"bad bytes")
    _, object_id = await flagged(source, state, "a/bad.png", "quarantine")
    taker = ActionTaker(source, state)

    await taker.perform(object_id, "quarantine", "a/bad.png", "a/bad.png")
    assert not (store / "a" / "bad.png").exists()
    assert (tmp_path / "quarantine" / "a" / "bad.png").read_bytes() == b"bad bytes"
    held = state.get(object_id)
    assert held is not None and (held.action, held.action_state) == ("quarantine", "done")
    assert in_quarantine(held) and taker.stats.actions == 1 and taker.stats.errors == 0

    done = await restore(source, state, object_id)
    assert (store / "a" / "bad.png").read_bytes() == b"bad bytes"
    assert not (tmp_path / "quarantine" / "a" / "bad.png").exists()
    assert (done.action, done.action_state) == ("restore", "done") and not in_quarantine(done)


async def test_a_quarantine_key_already_taken_keeps_both(
    source: LocalSource, state: SweepState, store: Path, tmp_path: Path
) -> None:
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / "bad.png").write_bytes(b"held before")
    (store / "bad.png").write_bytes(b"newcomer")
    _, object_id = await flagged(source, state, "bad.png", "quarantine")

    await ActionTaker(source, state).perform(object_id, "quarantine", "bad.png", "bad.png")
    assert (tmp_path / "quarantine" / "bad.png").read_bytes() == b"held before"
    assert (tmp_path / "quarantine" / f"bad.png.{object_id}").read_bytes() == b"newcomer"
    record = state.get(object_id)
    assert record is not None and record.quarantine_key == f"bad.png.{object_id}"
    assert record.action_state == "done"


async def test_a_longest_name_already_taken_is_held_under_a_name_that_fits(
    source: LocalSource, state: SweepState, store: Path, tmp_path: Path
) -> None:
    name = os.fsdecode(b"\xff" + "é".encode() * 127)  # 255 bytes: not UTF-8, then 2-byte characters
    (tmp_path / "quarantine").mkdir()
    (tmp_path / "quarantine" / name).write_bytes(b"held before")
    (store / name).write_bytes(b"newcomer")
    _, object_id = await flagged(source, state, name, "quarantine")

    await ActionTaker(source, state).perform(object_id, "quarantine", name, name)
    record = state.get(object_id)
    assert record is not None and record.action_state == "done", record
    suffix = f".{object_id}"
    keep = 1 + (255 - 1 - len(suffix)) // 2  # the byte that is not UTF-8, then whole 2-byte characters
    assert record.quarantine_key == name[:keep] + suffix
    assert (tmp_path / "quarantine" / record.quarantine_key).read_bytes() == b"newcomer"
    done = await restore(source, state, object_id)
    assert done.action_state == "done" and (store / name).read_bytes() == b"newcomer"


@pytest.mark.parametrize(("key", "expected"), [
    ("a/bad.png", "a/bad.png.7"),
    ("d/" + "x" * 255, "d/" + "x" * 253 + ".7"),
    ("é" * 127, "é" * 126 + ".7"),  # whole characters only: still UTF-8
])  # fmt: skip
def test_conflict_keys_keep_within_a_file_name(key: str, expected: str) -> None:
    assert conflict_key(key, 7) == expected
    assert len(expected.rsplit("/", 1)[-1].encode()) <= 255


async def test_deleting_what_is_already_gone_counts_as_done(
    source: LocalSource, state: SweepState, store: Path
) -> None:
    (store / "bad.png").write_bytes(b"bad bytes")
    _, object_id = await flagged(source, state, "bad.png", "delete")
    (store / "bad.png").unlink()
    taker = ActionTaker(source, state)
    await taker.perform(object_id, "delete", "bad.png", None)
    record = state.get(object_id)
    assert record is not None and (record.action, record.action_state) == ("delete", "done")
    assert taker.stats.actions == 1 and taker.stats.errors == 0


async def test_an_action_storage_refuses_is_recorded_as_failed(state: SweepState, store: Path) -> None:
    (store / "bad.png").write_bytes(b"bad bytes")
    source = LocalSource(store)  # no quarantine folder
    _, object_id = await flagged(source, state, "bad.png", "quarantine")
    taker = ActionTaker(source, state)
    await taker.perform(object_id, "quarantine", "bad.png", "bad.png")
    record = state.get(object_id)
    assert record is not None and record.action_state == "failed" and record.error
    assert taker.stats.errors == 1 and taker.stats.actions == 0
    assert (store / "bad.png").exists()


async def test_restore_refuses_what_is_not_in_quarantine(
    source: LocalSource, state: SweepState, store: Path
) -> None:
    (store / "bad.png").write_bytes(b"bad bytes")
    _, object_id = await flagged(source, state, "bad.png", "delete")
    with pytest.raises(ValueError, match="is not in quarantine"):
        await restore(source, state, object_id)
    with pytest.raises(ValueError, match="no swept object"):
        await restore(source, state, object_id + 1)


async def test_a_failed_restore_leaves_the_object_in_quarantine(
    source: LocalSource, state: SweepState, store: Path, tmp_path: Path
) -> None:
    (store / "bad.png").write_bytes(b"bad bytes")
    _, object_id = await flagged(source, state, "bad.png", "quarantine")
    await ActionTaker(source, state).perform(object_id, "quarantine", "bad.png", "bad.png")
    (store / "bad.png").write_bytes(b"a newcomer under the same name")

    done = await restore(source, state, object_id)
    assert (done.action, done.action_state) == ("quarantine", "done") and in_quarantine(done)
    assert done.error is not None and "already exists" in done.error
    assert (tmp_path / "quarantine" / "bad.png").read_bytes() == b"bad bytes"
    assert (store / "bad.png").read_bytes() == b"a newcomer under the same name"


async def test_finish_pending_does_only_this_runs_action(
    source: LocalSource, state: SweepState, store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("gone.png", "held.png"):
        (store / name).write_bytes(name.encode())
    source_id, to_delete = await flagged(source, state, "gone.png", "delete")
    _, to_quarantine = await flagged(source, state, "held.png", "quarantine")
    taker = ActionTaker(source, state)
    caplog.set_level(logging.INFO, logger="fediguard.sweep")

    await taker.finish_pending(source_id, "delete", dry_run=True)
    assert {r.id for r in state.pending(source_id)} == {to_delete, to_quarantine}
    assert (store / "gone.png").exists() and (store / "held.png").exists()
    assert caplog.text.count("dry run:") == 2

    await taker.finish_pending(source_id, "delete")
    assert not (store / "gone.png").exists() and (store / "held.png").exists()
    assert [r.id for r in state.pending(source_id)] == [to_quarantine]
    assert "a sweep with --action quarantine finishes it" in caplog.text

    await taker.finish_pending(source_id, "quarantine")
    assert state.pending(source_id) == []
    assert (tmp_path / "quarantine" / "held.png").read_bytes() == b"held.png"
    assert taker.stats.actions == 2
