"""Runs ``qorgan score`` in this process and kills the process with SIGKILL at a chosen
point: ``python tests/batch_kill_driver.py POINT N -- <qorgan score arguments>``.

POINT is where the N-th call dies, just before the call does its work:
``rename`` (``os.replace``: the atomic rename of every part, checkpoint and the
output), ``merge`` (copying a part into the output), ``cleanup`` (removing the work
folder after the output is in place). Used by tests/test_batch_faults.py; not a test.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

import pyarrow.parquet as pq

import qorgan


def die_on_call(n: int, real):
    calls = 0

    def wrapped(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    return wrapped


def main() -> int:
    point, n, sep, *score_args = sys.argv[1:]
    assert sep == "--", "usage: POINT N -- <qorgan score arguments>"
    n = int(n)
    if point == "rename":
        os.replace = die_on_call(n, os.replace)
    elif point == "merge":  # text outputs copy parts with copyfileobj, Parquet reads each part
        shutil.copyfileobj = die_on_call(n, shutil.copyfileobj)
        pq.read_table = die_on_call(n, pq.read_table)
    elif point == "cleanup":
        shutil.rmtree = die_on_call(n, shutil.rmtree)
    else:
        raise SystemExit(f"unknown point {point!r}")
    return qorgan.main(["score", *score_args])


if __name__ == "__main__":
    raise SystemExit(main())
