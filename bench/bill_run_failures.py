"""What customers that cannot be billed cost a bill run: the same recurring run with none and with K of them.

    .venv/bin/python bench/bill_run_failures.py --subscriptions 20000 --failing 1 --repeat 3
    .venv/bin/python bench/bill_run_failures.py --subscriptions 20000 --failing 4 --db postgresql

Setup is ``bench/bill_run.py``'s (N customers on a monthly flat fee of 10.00 EUR, January billed, the run bills
February), run once; then two copies per repetition:

- **clean**: as set up;
- **failing**: K customers, spread evenly over the customers in id order, get a negotiated price of
  99,999,999,999,999.00 EUR a month (a price override, as an operator's typo would make it), beyond the largest
  amount Remit bills: their batch fails while it is rated, is billed again in halves, and each of them is set
  aside with ``amount_out_of_range`` (``bill_run.bill_batch``).

- **known**: the same K customers, which a run of the day before could not bill either (as when nobody has fixed
  them yet): recent failures are billed one by one, after their batch, without splitting it.

The runs are ``bill_run.run`` as ``remit bill-run`` starts it, in a fresh process each, in turn. Checked: the
clean run billed N invoices; the others N - K, with exactly those K customers recorded. The last line is one JSON
object with the runs' seconds, ``overhead_ratio`` (failing ÷ clean) and ``known_overhead_ratio`` (known ÷ clean),
from medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bill_run as recurring  # noqa: E402  (bench/bill_run.py: its setup, databases and helpers)

AMOUNT = "99999999999999.00"


def child_break(url: str, failing: int, known: bool) -> dict[str, Any]:
    """Give ``failing`` customers, evenly spread, a price no invoice can hold; ``known``: and record them as
    failed by a run of the day before."""
    from sqlalchemy import select

    from remit.adapters.db import tables as t
    from remit.adapters.db.engine import make_engine
    from remit.adapters.db.ids import new_id

    engine = make_engine(url)
    with engine.begin() as conn:
        customers = list(conn.execute(select(t.customers.c.id).order_by(t.customers.c.id)).scalars())
        price_id = conn.execute(select(t.prices.c.id)).scalars().one()
        step = len(customers) / failing
        chosen = [customers[int(step * k + step / 2)] for k in range(failing)]
        conn.execute(
            t.price_overrides.insert(),
            [
                {
                    "id": new_id("ovr"),
                    "customer_id": c,
                    "price_id": price_id,
                    "model": "flat",
                    "config": {"amount": AMOUNT},
                    "created_at": datetime(2026, 1, 15, tzinfo=UTC),
                }
                for c in chosen
            ],
        )
        if known:
            before = datetime.now(UTC) - timedelta(days=1)
            run_id = new_id("billrun")
            conn.execute(
                t.bill_runs.insert(),
                [
                    {
                        "id": run_id,
                        "as_of": before,
                        "status": "done",
                        "customers_seen": len(customers),
                        "invoices_created": 0,
                        "customers_failed": failing,
                        "started_at": before,
                        "finished_at": before,
                    }
                ],
            )
            conn.execute(
                t.bill_run_failures.insert(),
                [
                    {
                        "bill_run_id": run_id,
                        "customer_id": c,
                        "code": "amount_out_of_range",
                        "message": "(the day before)",
                        "failed_at": before,
                    }
                    for c in chosen
                ],
            )
    engine.dispose()
    return {"customers": chosen}


def child_run(url: str, workers: int) -> dict[str, Any]:
    from sqlalchemy import select

    from remit.adapters.db import tables as t
    from remit.adapters.db.engine import make_engine
    from remit.bootstrap import Remit
    from remit.domain.clock import SystemClock
    from remit.service_layer import bill_run

    app = Remit(make_engine(url), SystemClock())
    started, cpu_started = time.perf_counter(), recurring.cpu_seconds()
    result = bill_run.run(app.uow, as_of=recurring.AS_OF, workers=workers)
    seconds, cpu = time.perf_counter() - started, recurring.cpu_seconds() - cpu_started
    with app.engine.connect() as conn:
        recorded = sorted(
            conn.execute(
                select(t.bill_run_failures.c.customer_id).where(t.bill_run_failures.c.bill_run_id == result.id)
            ).scalars()
        )
    app.engine.dispose()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "invoices_created": result.invoices_created,
        "failed": sorted(f.customer_id for f in result.failures),
        "recorded": recorded,
        "codes": sorted({f.code for f in result.failures}),
    }


def child(mode: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise recurring.BenchFailure(f"the {mode} step failed (exit {proc.returncode})")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=20_000, help="how many (default 20000)")
    parser.add_argument("--failing", type=int, default=1, help="customers that cannot be billed (default 1)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=None, help="bill run processes (default: as remit bill-run)")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs (default 3)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        a = args.args
        out = child_break(a[0], int(a[1]), a[2] == "known") if args.child == "break" else child_run(a[0], int(a[1]))
        print(json.dumps(out), flush=True)
        return 0

    n, k = args.subscriptions, args.failing
    if not 1 <= k <= n // 10:
        parser.error("--failing must be from 1 to a tenth of --subscriptions")
    workers = args.workers or recurring.default_workers()
    recurring.log(f"bench: {n:,} subscriptions, {k} that cannot be billed, on {args.db} ({os.cpu_count()} cores)")
    dbs = recurring.Databases(args.db)
    runs_of: dict[str, list[dict[str, Any]]] = {"clean": [], "failing": [], "known": []}
    try:
        recurring.child("setup", dbs.url, str(n))
        for i in range(args.repeat):
            for label, runs in runs_of.items():
                url = dbs.copy(f"{label}{i}")
                chosen = child("break", url, str(k), label)["customers"] if label != "clean" else []
                run = child("run", url, str(workers))
                dbs.remove(url)
                if run["invoices_created"] != n - len(chosen) or run["failed"] != sorted(chosen):
                    raise recurring.BenchFailure(
                        f"{label}: {run['invoices_created']} invoices and failures {run['failed']}, "
                        f"expected {n - len(chosen)} and {sorted(chosen)}"
                    )
                if run["recorded"] != sorted(chosen) or run["codes"] not in ([], ["amount_out_of_range"]):
                    raise recurring.BenchFailure(f"{label}: recorded {run['recorded']} ({run['codes']})")
                runs.append(run)
                recurring.log(f"{label} run {i + 1}: {run['seconds']:.2f} s (CPU {run['cpu_seconds']:.2f} s)")
    finally:
        dbs.drop()
    clean_s, failing_s, known_s = (statistics.median(r["seconds"] for r in runs) for runs in runs_of.values())
    ratio, known_ratio = failing_s / clean_s, known_s / clean_s
    recurring.log(f"overhead of {k} failing customer(s): {ratio:.2f}x ({failing_s:.2f} vs {clean_s:.2f} s)")
    recurring.log(f"the same, known from the run before: {known_ratio:.2f}x ({known_s:.2f} s)")
    print(
        json.dumps(
            {
                "db": args.db,
                "subscriptions": n,
                "failing": k,
                "workers": workers if args.db == "postgresql" else 1,
                **{f"{label}_seconds": [round(r["seconds"], 3) for r in runs] for label, runs in runs_of.items()},
                "overhead_ratio": round(ratio, 3),
                "known_overhead_ratio": round(known_ratio, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
