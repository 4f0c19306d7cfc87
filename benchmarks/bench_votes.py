"""Vote throughput with concurrent writers: N processes, each its own connection and rater.

    python benchmarks/bench_votes.py [--processes 8] [--votes 500] [--synchronous FULL|NORMAL]

Each process signs in with its own token and casts its votes the way the app does
(``next_item_for`` then ``cast_vote``, one transaction per vote).  Prints votes/s over the
voting phase (all processes start together), per-vote latency, the time to build the report on
the result, and peak memory; checks that no vote was lost or duplicated.  Goal: >= 100 votes/s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lungseg.study import CaseSpec, DesignParams, StudyStore, authenticate_rater, study_report  # noqa: E402

GOAL_VOTES_PER_S = 100


def _voter(path: str, token: str, n_votes: int, synchronous: str, start, results) -> None:
    store = StudyStore(path, synchronous=synchronous)
    session = authenticate_rater(store, token)
    latencies = []
    start.wait()
    began = time.perf_counter()
    for i in range(n_votes):
        t = time.perf_counter()
        item = store.next_item_for(session)
        store.cast_vote(session, item.item_id, "left" if i % 3 else "right", response_ms=1000 + i)
        latencies.append(time.perf_counter() - t)
    ended = time.perf_counter()
    store.close()
    results.put((began, ended, latencies))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--votes", type=int, default=500, help="votes per process")
    parser.add_argument("--synchronous", default="FULL", choices=["NORMAL", "FULL"])
    parser.add_argument("--dir", default=None, help="where to put the database (default: a temporary folder)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        n_cases = -(-args.votes // 10)
        with StudyStore(path) as store:
            store.create_study("bench", [CaseSpec(f"C{c:04d}", tuple(range(100))) for c in range(n_cases)],
                               DesignParams(slices_per_case=10), actor="bench")
            tokens = [store.invite_rater("bench", f"Dr {i}", "Radiologist", actor="bench").token
                      for i in range(args.processes)]
        setup_s = time.perf_counter() - t0

        # perf_counter is CLOCK_MONOTONIC on Linux, comparable across processes.
        ctx = mp.get_context("spawn")
        start, results = ctx.Barrier(args.processes), ctx.Queue()
        procs = [ctx.Process(target=_voter, args=(str(path), t, args.votes, args.synchronous, start, results))
                 for t in tokens]
        for p in procs:
            p.start()
        runs = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            print("a voter process failed", file=sys.stderr)
            return 1

        wall = max(r[1] for r in runs) - min(r[0] for r in runs)
        total = args.processes * args.votes
        latencies = sorted(x for r in runs for x in r[2])

        with StudyStore(path) as store:
            integrity = store.integrity_check()
            stored = store.vote_count()
            distinct = store.conn.execute("SELECT COUNT(DISTINCT rater_id || ':' || item_id) FROM votes").fetchone()[0]
            import scipy.stats  # noqa: F401  (a one-off ~1 s import; time the report itself)

            t1 = time.perf_counter()
            report = study_report(store, "bench")
            report_s = time.perf_counter() - t1

    rate = total / wall
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"processes            {args.processes}")
    print(f"votes                {total} ({args.votes} per process), synchronous={args.synchronous}")
    print(f"setup                {setup_s:.2f} s (study + {args.processes} invitations)")
    print(f"voting wall time     {wall:.2f} s")
    print(f"throughput           {rate:.0f} votes/s (goal >= {GOAL_VOTES_PER_S})")
    print(f"latency per vote     median {1000 * statistics.median(latencies):.1f} ms, "
          f"p99 {1000 * latencies[int(0.99 * (len(latencies) - 1))]:.1f} ms, max {1000 * latencies[-1]:.1f} ms")
    print(f"report on all votes  {report_s:.2f} s ({report['n_votes']} votes)")
    print(f"peak memory          parent {self_kb / 1024:.0f} MiB, largest voter process {child_kb / 1024:.0f} MiB")
    print(f"check                stored {stored}, distinct {distinct}, integrity {integrity}")
    ok = stored == distinct == total and integrity == "ok"
    if not ok:
        print("FAILED: votes lost or duplicated", file=sys.stderr)
        return 1
    if rate < GOAL_VOTES_PER_S:
        print(f"below the goal of {GOAL_VOTES_PER_S} votes/s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
