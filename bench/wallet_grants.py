"""Benchmark of a bill run's first step when many customers have monthly credits: recurring grants and expiry.

    .venv/bin/python bench/wallet_grants.py --customers 3000
    .venv/bin/python bench/wallet_grants.py --customers 3000 --db postgresql

A common plan gives every customer an allowance of credits each month (a recurring grant), expiring after a few
weeks. The bill run on the 1st grants that month's credits to every such customer before it bills anyone, and
a later run expires what is left. This measures those two runs and, as the reference, a run with nothing to do.

Set-up, through Remit's own services (so slow: about 5 ms a customer): a throwaway database (SQLite in a
temporary directory, or a fresh PostgreSQL database on 127.0.0.1:5432 or REMIT_BENCH_POSTGRES_URL, dropped at
the end), one seller, and N customers each with a wallet and a recurring grant of 10 credits a month from
1 January 2026, expiring after 20 days (January's are granted when the schedule is made; with ``--paid`` they
are sold, each occurrence with its purchase invoice, and granted before payment); PostgreSQL's
statistics are then gathered (ANALYZE). Measured: ``bill_run.run`` on 1 February, 00:05 (February's grants, and
January's credits expired on the 21st), then on 25 February (February's expire), then again (nothing due).
The last line printed is one JSON object with the seconds of each and the cost per customer.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from bill_run import Databases, Seconds, seller_app


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--paid", action="store_true", help="the credits are sold: a purchase invoice each month, granted at once"
    )
    args = parser.parse_args()

    from remit.adapters.db.engine import make_engine
    from remit.service_layer import accounts, bill_run, wallets

    dbs = Databases(args.db)  # a throwaway database, dropped at the end
    engine = make_engine(dbs.url)
    seconds: dict[str, Seconds] = {}
    try:
        app, clock = seller_app(engine, datetime(2026, 1, 1, tzinfo=UTC))
        began = time.perf_counter()
        for i in range(args.customers):
            with app.uow() as uow:
                cus = accounts.create_customer(uow, f"Customer {i}", currency_code="EUR", country="DE")
                wallet = wallets.create_wallet(uow, cus)["id"]
                wallets.create_recurring_grant(
                    uow,
                    wallet,
                    "10",
                    interval="month",
                    expires_days=20,
                    paid=args.paid,
                    grant_before_payment=args.paid,
                )
        print(f"set up {args.customers} customers in {time.perf_counter() - began:.1f} s", flush=True)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        for label, at in (
            ("grants", datetime(2026, 2, 1, 0, 5, tzinfo=UTC)),
            ("expiry", datetime(2026, 2, 25, 0, 5, tzinfo=UTC)),
            ("nothing", datetime(2026, 2, 25, 0, 5, tzinfo=UTC)),
        ):
            clock.move_to(at)
            began = time.perf_counter()
            result = bill_run.run(app.uow, at)
            seconds[label] = time.perf_counter() - began
            if result.failures:
                raise SystemExit(f"{label}: {len(result.failures)} customers failed")
            print(f"{label}: {seconds[label]:.3f} s", flush=True)
    finally:
        engine.dispose()
        dbs.drop()
    print(
        json.dumps(
            {
                "db": args.db,
                "customers": args.customers,
                "paid": args.paid,
                "seconds": {k: round(v, 3) for k, v in seconds.items()},
                "ms_per_customer": {k: round(1000 * v / args.customers, 3) for k, v in seconds.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
