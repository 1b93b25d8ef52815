"""Fixed fault scenarios on a real group through the relays, each checked like a chaos run
(bank, list-append, lost writes, stale reads, convergence after healing).

They take one to three minutes each on two shared cores: `make test` runs one of them (a member
whose backend is killed and restarted rejoins, marked `chaos_short`) beside the fault-free run
of test_chaos_run.py; the others are deselected (not skipped) unless GRPROXY_CHAOS_FAULTS=1,
which `make chaos` sets (tests/chaos/conftest.py).

Known engine bugs are marked xfail(strict=True) on the scenarios that show them, so a fix makes
them XPASS and fail: then remove the marker.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.chaos.cluster import Cluster, connect
from tests.chaos.runner import Fault, Nemesis, RunResult, read_final, run_once, wait_converged
from tests.chaos.workloads import Bank, ListAppend

pytestmark = [pytest.mark.e2e, pytest.mark.chaos_faults]

DURATION_S = 30
CONVERGENCE_TIMEOUT_S = 60


def _run(tmp_path: Path, *faults: Fault) -> RunResult:
    return run_once(seed=7, run=0, kinds=(), duration_s=DURATION_S, out=tmp_path / "run", faults=list(faults),
                    convergence_timeout_s=CONVERGENCE_TIMEOUT_S)


def _assert_clean(r: RunResult) -> None:
    details = {res.checker: res.to_dict() for res in r.results if not res.valid}
    assert r.valid and r.converged_s is not None, (r.violations(), details, r.directory)


def test_short_network_faults_below_the_expel_timeout(tmp_path: Path) -> None:
    """Isolation, one-way loss and delay shorter than suspicion + expel: nobody leaves."""
    _assert_clean(_run(tmp_path,
                       Fault(3, 7, "isolate", ("m3",)),
                       Fault(10, 14, "one-way", ("m1", "m2")),
                       Fault(17, 21, "delay", (), delay_ms=100)))


def test_secondary_member_process_killed_and_restarted(tmp_path: Path) -> None:
    _assert_clean(_run(tmp_path, Fault(5, 12, "kill-member", ("m2",))))


def test_secondary_member_process_frozen_and_resumed(tmp_path: Path) -> None:
    _assert_clean(_run(tmp_path, Fault(5, 9, "stop-member", ("m3",))))


def test_member_expelled_by_a_long_partition_rejoins(tmp_path: Path) -> None:
    _assert_clean(_run(tmp_path, Fault(4, 22, "isolate", ("m3",))))


def test_coordinated_crash_then_the_documented_reboot(tmp_path: Path) -> None:
    """Every member process, backend and the router killed -9 within a second; then what the
    README says: restart everything with its config, `grproxy reboot --config …`. Nothing
    acknowledged is lost and the group takes writes again (clients go on after the reboot)."""
    crash = Fault(5, 9, "crash-all", ("member:m2", "backend:m1", "member:m1", "router", "backend:m3", "member:m3",
                                      "backend:m2"), gaps_ms=(40, 90, 10, 120, 60, 30))
    _assert_clean(_run(tmp_path, crash))


def test_majority_lost_then_force_members_on_the_survivor(tmp_path: Path) -> None:
    """Two members' hosts (process and backend) die; the DBA forces the survivor alone as the
    group, which takes writes again; the two come back and rejoin it."""
    _assert_clean(_run(tmp_path, Fault(4, 18, "force-members", ("m3", "m1", "m2"), backends=True)))


def test_clients_that_give_up_mid_commit(tmp_path: Path) -> None:
    """Clients with a 40 ms read timeout while every link is 20 ms slow: COMMITs whose answer
    never came (info) must not make the members diverge."""
    _assert_clean(_run(tmp_path, Fault(3, 20, "give-up", (), delay_ms=20, timeout_ms=40)))


@pytest.mark.chaos_short
def test_member_rejoins_after_its_backend_is_killed_and_restarted(tmp_path: Path) -> None:
    _assert_clean(_run(tmp_path, Fault(5, 12, "kill-backend", ("m2",))))


def _tables_with_a_row(c: Cluster, key: int) -> None:
    """The workloads' tables, and one list-append row (key `key`, value [1]) written through the router."""
    conn = connect(c.router_port, timeout_s=30)
    with conn.cursor() as cur:
        Bank.setup(Bank(), cur)
        ListAppend.setup(ListAppend(), cur)
        cur.execute(f"INSERT INTO la.lists (k, v) VALUES ({key}, '1')")
    conn.close()


def _assert_whole_with_the_row(c: Cluster, key: int, dba_log: list[str]) -> None:
    """The group ends whole and converged, every backend holding the row `_tables_with_a_row` wrote."""
    converged_s, note = wait_converged(c, 120)
    assert converged_s is not None, (note, dba_log)
    finals = read_final(c)
    assert all(f.lists is not None and f.lists.get(key) == [1] for f in finals.values()), finals


def test_two_member_view_that_loses_one_is_forced_by_the_dba(tmp_path: Path) -> None:
    """The majority loss a kill schedule can cause (seed 20261207 run 26). m1's backend dies, so m1
    goes to ERROR and leaves, and the view is {m2, m3}. Then m3's process is killed and restarted.
    m2 cannot reach a majority of its view, and a new incarnation of m3 may not vote for the old
    one, so nobody is admitted (as in GR). The harness's DBA step must see that, force m2 alone,
    and the group must end whole, with identical backends and the write made before the loss."""
    with Cluster(tmp_path / "group") as c:
        _tables_with_a_row(c, 424242)
        c.signal_backend("m1", signal.SIGKILL)
        deadline = time.monotonic() + 60
        while c.online_view(c.member("m2")) != {"m2", "m3"} or c.online_view(c.member("m3")) != {"m2", "m3"}:
            assert time.monotonic() < deadline, "m1 did not leave the group after its backend died"
            time.sleep(0.5)
        c.signal_member("m3", signal.SIGKILL)
        c.restart_member("m3")
        c.restart_backend("m1")
        nemesis = Nemesis(c, [], ["m1", "m2", "m3"])
        deadline = time.monotonic() + 30
        while nemesis._blocked_survivors(c.member("m2")) != {"m2"}:
            assert time.monotonic() < deadline, f"m2 was never seen without a majority: {c.member_states(c.member('m2'))}"
            time.sleep(0.5)
        assert nemesis.restore_majority(), nemesis.log
        _assert_whole_with_the_row(c, 424242, nemesis.log)


def test_majority_lost_while_the_survivor_is_out_of_the_group_ends_in_a_reboot(tmp_path: Path) -> None:
    """Seed 20261208 run 4: m3 is in ERROR (its backend died) when m1's and m2's hosts die, so no
    group is left: force_members on m3 is refused ('Group Replication is not running on this
    member'), as GR refuses it. The DBA's way out is the whole-group reboot, and the group must
    come back whole with identical backends and the write made before."""
    with Cluster(tmp_path / "group", single_primary=False) as c:
        _tables_with_a_row(c, 434343)
        c.signal_backend("m3", signal.SIGKILL)
        deadline = time.monotonic() + 60
        while c.online_view(c.member("m1")) != {"m1", "m2"}:
            assert time.monotonic() < deadline, "m3 stayed in the group after its backend died"
            time.sleep(0.5)
        nemesis = Nemesis(c, [], ["m1", "m2", "m3"])
        fault = Fault(0, 1, "force-members", ("m3", "m1", "m2"), backends=True)
        nemesis.apply(fault)
        assert any("whole-group reboot at heal" in line for line in nemesis.log), nemesis.log
        c.restart_backend("m3")
        nemesis.heal(fault)
        _assert_whole_with_the_row(c, 434343, nemesis.log)
