"""CLI command ``cache``: the patient data lungseg keeps on disk.

    python -m lungseg cache info     # every folder of patient data: entries, size; the policy
    python -m lungseg cache clear    # remove it all (results, unzipped and PACS series, uploads, viewer files)
    python -m lungseg cache enforce  # apply the retention policy now (e.g. from cron)

The policy (:mod:`lungseg.storage`): at most ``LUNGSEG_DISK_CACHE_MB`` (default 5120) in all folders together,
nothing unused for ``LUNGSEG_RETENTION_DAYS`` (default 7).
"""

from __future__ import annotations

import argparse


def _mb(n: int) -> str:
    return f"{n / 1024**2:.1f} MB"


def cmd_cache(args: argparse.Namespace) -> int:
    from lungseg import storage

    policy = storage.RetentionPolicy.from_env()
    if args.action == "clear":
        n, size = storage.clear()
        print(f"removed {n} entries ({_mb(size)}) of patient data")
        return 0
    if args.action == "enforce":
        removed = storage.enforce(policy)
        print(f"removed {len(removed)} entries; policy: {_mb(policy.budget_bytes)}, "
              f"{policy.max_age_s / 86400:g} days")
        return 0
    rows = storage.usage()
    total = sum(u.bytes for u in rows)
    print(f"patient data on disk: {_mb(total)} of {_mb(policy.budget_bytes)} (LUNGSEG_DISK_CACHE_MB); entries unused "
          f"for {policy.max_age_s / 86400:g} days are removed (LUNGSEG_RETENTION_DAYS)")
    for u in rows:
        print(f"  {u.folder.name}: {u.entries} entries, {_mb(u.bytes)}  {u.folder.path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("cache", help="patient data kept on disk: info, clear")
    p.add_argument("action", choices=("info", "clear", "enforce"),
                   help="info: folders and sizes; clear: remove everything; enforce: apply the retention policy now")
    p.set_defaults(func=cmd_cache)
