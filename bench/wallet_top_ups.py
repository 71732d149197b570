"""Benchmark of a bill run whose invoices take many wallets under their automatic top-up threshold.

    .venv/bin/python bench/wallet_top_ups.py --customers 2000
    .venv/bin/python bench/wallet_top_ups.py --customers 2000 --db postgresql

Prepaid credits with automatic recharge: each customer holds 10 credits (rate 1) in a wallet that buys 20 more
when its balance falls under 5, and a plan of 8.00 a month. The bill run of 1 January bills every customer; the
credits pay each invoice and leave 2, so every wallet buys its top-up: one purchase invoice each. The reference
is the same bill run on wallets without a threshold (no top-up), in a database of its own set up the same way.

Set-up, through Remit's own services (about 5 ms a customer): throwaway databases (SQLite in a temporary
directory, or fresh PostgreSQL databases on 127.0.0.1:5432 or REMIT_BENCH_POSTGRES_URL, dropped at the end);
PostgreSQL's statistics are gathered (ANALYZE) before the run. The last line printed is one JSON object with the
seconds of both runs and ``ratio_to_reference`` (with top-ups ÷ without).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from bill_run import Databases, Seconds, seller_app


def _run(kind: str, customers: int, top_ups: bool) -> Seconds:
    """The bill run's wall time in seconds (a timing, not money)."""
    from remit.adapters.db.engine import make_engine
    from remit.service_layer import accounts, bill_run, catalog, subscriptions, wallets

    dbs = Databases(kind)
    engine = make_engine(dbs.url)
    try:
        app, clock = seller_app(engine, datetime(2026, 1, 1, tzinfo=UTC))
        with app.uow() as uow:
            price = {"currency": "EUR", "model": "flat", "config": {"amount": "8.00"}, "interval": "month"}
            catalog.create_plan(uow, "basic", "Basic", [price])
        terms = {"top_up_threshold": "5", "top_up_credits": "20"} if top_ups else {}
        for i in range(customers):
            with app.uow() as uow:
                cus = accounts.create_customer(uow, f"Customer {i}", currency_code="EUR", country="DE")
                wallet = wallets.create_wallet(uow, cus, **terms)["id"]
                wallets.grant(uow, wallet, "10")
                subscriptions.create_subscription(uow, cus, "basic", anchor="calendar")
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        clock.move_to(datetime(2026, 1, 1, 12, tzinfo=UTC))
        began = time.perf_counter()
        result = bill_run.run(app.uow, clock.now())
        seconds = time.perf_counter() - began
        expected = customers * (2 if top_ups else 1)  # each customer's invoice, and its top-up's purchase invoice
        with app.uow() as uow:
            written = uow.conn.exec_driver_sql("SELECT count(*) FROM invoices").scalar_one()
        if len(result.invoice_ids) != customers or written != expected or result.failures:
            raise SystemExit(f"{len(result.invoice_ids)} invoices billed and {written} written; {expected} expected")
        return seconds
    finally:
        engine.dispose()
        dbs.drop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    plain = _run(args.db, args.customers, top_ups=False)
    print(f"without top-ups: {plain:.3f} s", flush=True)
    topped = _run(args.db, args.customers, top_ups=True)
    print(f"with a top-up each: {topped:.3f} s", flush=True)
    print(
        json.dumps(
            {
                "db": args.db,
                "customers": args.customers,
                "seconds": round(topped, 3),
                "reference_seconds": round(plain, 3),
                "ratio_to_reference": round(topped / plain, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
