"""The audit spool: whole lines appended and read back in order, torn tails cut, a live
writer's file never adopted by another."""

from __future__ import annotations

from pathlib import Path

from broker.adapters.audit_spool import Spool

PREFIX = "atlas-broker"


def test_appended_records_read_back_in_order(tmp_path: Path) -> None:
    """Records come back as written, with the offset after the last one."""
    spool = Spool.create(tmp_path, prefix=PREFIX, writer="w1")
    spool.append([(1, '{"event":"a"}'), (2, '{"event":"b"}')])
    spool.append([(3, '{"event":"c"}')])
    records, end = spool.read(10)
    assert ([(1, '{"event":"a"}'), (2, '{"event":"b"}'), (3, '{"event":"c"}')], spool.size()) == (
        records,
        end,
    )


def test_read_is_bounded_and_resumes_at_the_offset(tmp_path: Path) -> None:
    """Reading after `replayed` returns the next records only."""
    spool = Spool.create(tmp_path, prefix=PREFIX, writer="w1")
    spool.append([(n, f'{{"n":{n}}}') for n in range(1, 6)])
    first, spool.replayed = spool.read(2)
    second, _ = spool.read(10)
    assert ([1, 2], [3, 4, 5]) == ([s for s, _ in first], [s for s, _ in second])


def test_a_live_writers_spool_is_not_adopted(tmp_path: Path) -> None:
    """A spool whose writer holds its lock is left alone."""
    Spool.create(tmp_path, prefix=PREFIX, writer="alive").append([(1, "{}")])
    assert [] == Spool.adopt_orphans(tmp_path, prefix=PREFIX, own="me")


def test_a_dead_writers_spool_is_adopted(tmp_path: Path) -> None:
    """A spool nobody holds (its writer died) is adopted with its writer's id."""
    dead = Spool.create(tmp_path, prefix=PREFIX, writer="dead")
    dead.append([(1, "{}")])
    dead.close()
    adopted = Spool.adopt_orphans(tmp_path, prefix=PREFIX, own="me")
    assert ["dead"] == [spool.writer for spool in adopted]


def test_other_prefixes_are_not_adopted(tmp_path: Path) -> None:
    """Spools of another key prefix (another broker deployment) are not ours to replay."""
    other = Spool.create(tmp_path, prefix="other", writer="dead")
    other.append([(1, "{}")])
    other.close()
    assert [] == Spool.adopt_orphans(tmp_path, prefix=PREFIX, own="me")


def test_a_torn_last_line_is_cut_on_adoption(tmp_path: Path) -> None:
    """A crash mid-append leaves half a line; adoption keeps only the whole ones."""
    dead = Spool.create(tmp_path, prefix=PREFIX, writer="dead")
    dead.append([(1, '{"n":1}')])
    dead.close()
    with dead.path.open("a") as file:
        file.write('2 {"n":')
    [adopted] = Spool.adopt_orphans(tmp_path, prefix=PREFIX, own="me")
    assert [(1, '{"n":1}')] == adopted.read(10)[0]


def test_an_empty_orphan_is_removed(tmp_path: Path) -> None:
    """A dead writer's empty spool is deleted, not replayed."""
    dead = Spool.create(tmp_path, prefix=PREFIX, writer="dead")
    dead.close()
    Spool.adopt_orphans(tmp_path, prefix=PREFIX, own="me")
    assert not dead.path.exists()


def test_reset_empties_the_file(tmp_path: Path) -> None:
    """After a full replay the spool is truncated and its offset starts again."""
    spool = Spool.create(tmp_path, prefix=PREFIX, writer="w1")
    spool.append([(1, "{}")])
    spool.replayed = spool.size()
    spool.reset()
    assert (0, 0, False) == (spool.size(), spool.replayed, spool.pending())


def test_a_removed_spool_holds_nothing(tmp_path: Path) -> None:
    """A spool removed after its replay reports no bytes, so a backlog metric read while
    it is being removed does not fail."""
    spool = Spool.create(tmp_path, prefix=PREFIX, writer="w1")
    spool.append([(1, '{"event":"a"}')])

    spool.remove()

    assert (0, False) == (spool.size(), spool.pending())
