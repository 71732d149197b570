"""The schema, as SQLAlchemy Core tables. Money is integer minor units; rates and quantities exact decimals."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from remit.adapters.db.types import ExactDecimal, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(40)

legal_entities = Table(
    "legal_entities",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("address", JSON, nullable=False),
    Column("country", String(2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("tax_id", String(64)),
    Column("rounding_policy", String(16), nullable=False),
    Column("invoice_prefix", String(16), nullable=False),
    Column("credit_note_prefix", String(16), nullable=False),
    Column("auto_finalize", Boolean, nullable=False),
    Column("payment_terms_days", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

number_series = Table(
    "number_series",
    metadata,
    Column("legal_entity_id", ID, ForeignKey("legal_entities.id"), primary_key=True),
    Column("series", String(32), primary_key=True),  # e.g. "INV-2026": numbers restart each year
    Column("next_value", BigInteger, nullable=False),
)

test_clocks = Table(
    "test_clocks",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("frozen_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # While ``advancing``: until when the advancing process holds the clock (it renews this as it goes); past it,
    # the process is taken for dead and another advance may take the clock over. NULL: held by no one.
    Column("claimed_until", UTCDateTime),
    # The legal entity whose customers it holds and whose keys see it; NULL: any entity's, seen only by keys of
    # every entity (migration 0023).
    Column("legal_entity_id", ID, ForeignKey("legal_entities.id")),
)

customers = Table(
    "customers",
    metadata,
    Column("id", ID, primary_key=True),
    Column("legal_entity_id", ID, ForeignKey("legal_entities.id"), nullable=False, index=True),
    Column("external_id", String(200), index=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320)),
    Column("currency", String(3), nullable=False),
    Column("language", String(16), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("country", String(2), nullable=False),
    Column("address", JSON, nullable=False),
    Column("tax_ids", JSON, nullable=False),
    Column("test_clock_id", ID, ForeignKey("test_clocks.id")),
    Column("created_at", UTCDateTime, nullable=False),
    # The bill run walks one clock's customers (or the real ones: NULL) in id order, batch after batch: this
    # index gives them in that order from any starting id, so a batch costs the same at any number of customers.
    Index("ix_customers_test_clock_id_id", "test_clock_id", "id"),
    # An external id is unique within a legal entity and a mode (live, or test: on a test clock), so one entity's
    # or mode's ids neither collide with nor reveal another's (migration 0022).
    Index(
        "ux_customers_live_external_id",
        "legal_entity_id",
        "external_id",
        unique=True,
        sqlite_where=text("test_clock_id IS NULL"),
        postgresql_where=text("test_clock_id IS NULL"),
    ),
    Index(
        "ux_customers_test_external_id",
        "legal_entity_id",
        "external_id",
        unique=True,
        sqlite_where=text("test_clock_id IS NOT NULL"),
        postgresql_where=text("test_clock_id IS NOT NULL"),
    ),
)

products = Table(
    "products",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

plans = Table(
    "plans",
    metadata,
    Column("id", ID, primary_key=True),
    Column("code", String(100), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("product_id", ID, ForeignKey("products.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

plan_versions = Table(
    "plan_versions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("plan_id", ID, ForeignKey("plans.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("plan_id", "version"),
)

prices = Table(
    "prices",
    metadata,
    Column("id", ID, primary_key=True),
    Column("product_id", ID, ForeignKey("products.id"), nullable=False),
    Column("plan_version_id", ID, ForeignKey("plan_versions.id"), index=True),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("type", String(16), nullable=False),
    Column("model", String(32), nullable=False),
    Column("config", JSON, nullable=False),
    Column("interval_unit", String(16)),
    Column("interval_count", Integer),
    Column("timing", String(16), nullable=False),
    # Usage prices: {"meter": code, "included_units": "..", "dimensions": {...}}; {"minimum": true} for a
    # commitment true-up; NULL for a fixed recurring or one-off price.
    Column("usage", JSON(none_as_null=True)),
    Column("created_at", UTCDateTime, nullable=False),
)

price_overrides = Table(
    "price_overrides",
    metadata,
    Column("id", ID, primary_key=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False),
    Column("price_id", ID, ForeignKey("prices.id"), nullable=False),
    Column("model", String(32), nullable=False),
    Column("config", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("customer_id", "price_id"),
)

coupons = Table(
    "coupons",
    metadata,
    Column("id", ID, primary_key=True),
    Column("code", String(100), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("percent_off", ExactDecimal),
    Column("amount_off_minor", BigInteger),
    Column("currency", String(3)),
    Column("duration", String(16), nullable=False),
    Column("duration_periods", Integer),
    Column("max_redemptions", Integer),
    Column("redeem_by", UTCDateTime),
    Column("times_redeemed", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

promotion_codes = Table(
    "promotion_codes",
    metadata,
    Column("id", ID, primary_key=True),
    Column("code", String(100), nullable=False, unique=True),
    Column("coupon_id", ID, ForeignKey("coupons.id"), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("max_redemptions", Integer),
    Column("expires_at", UTCDateTime),
    Column("times_redeemed", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False, index=True),
    Column("plan_id", ID, ForeignKey("plans.id")),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("interval_unit", String(16), nullable=False),
    Column("interval_count", Integer, nullable=False),
    Column("anchor_kind", String(16), nullable=False),
    Column("anchor_on", Date, nullable=False),
    Column("started_on", Date, nullable=False),
    Column("trial_end_on", Date),
    Column("ended_on", Date),
    Column("reviewed_from_on", Date),  # periods ending on or before this day are settled
    # The last day a bill run billed everything due up to: moved only forward, only by the bill run (a late event,
    # a cancellation or a change moves reviewed_from_on back, not this). Periods before the one holding it are
    # invoiced; late usage for them is bound by the grace period.
    Column("billed_through_on", Date),
    Column("next_seq", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

subscription_events = Table(
    "subscription_events",
    metadata,
    Column("id", ID, primary_key=True),
    Column("subscription_id", ID, ForeignKey("subscriptions.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("effective_on", Date, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("items", JSON, nullable=False),
    Column("source", String(32), nullable=False),  # change, schedule, phase, pause, cancel...
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),  # a scheduled change released before it took effect
    UniqueConstraint("subscription_id", "seq"),
)

subscription_coupons = Table(
    "subscription_coupons",
    metadata,
    Column("id", ID, primary_key=True),
    Column("subscription_id", ID, ForeignKey("subscriptions.id"), nullable=False, index=True),
    Column("coupon_id", ID, ForeignKey("coupons.id"), nullable=False),
    Column("promotion_code_id", ID, ForeignKey("promotion_codes.id")),
    Column("applied_on", Date, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

bill_runs = Table(
    "bill_runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("as_of", UTCDateTime, nullable=False),
    Column("test_clock_id", ID),
    Column("status", String(16), nullable=False),
    Column("customers_seen", Integer, nullable=False),
    Column("invoices_created", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    # Customers the run could not bill (see bill_run_failures); the run billed everyone else.
    Column("customers_failed", Integer, nullable=False, server_default="0"),
    Column("error", Text),  # why the run itself stopped (status "failed"), e.g. the database went away
)

# One row per customer a bill run could not bill, with why. The customer's subscriptions keep their review marks,
# so every later run tries again; nothing of the customer's failed attempt was written.
bill_run_failures = Table(
    "bill_run_failures",
    metadata,
    Column("bill_run_id", ID, ForeignKey("bill_runs.id"), primary_key=True),
    Column("customer_id", ID, ForeignKey("customers.id"), primary_key=True, index=True),
    Column("code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("field", String(200)),
    Column("failed_at", UTCDateTime, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", ID, primary_key=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False, index=True),
    Column("legal_entity_id", ID, ForeignKey("legal_entities.id"), nullable=False),
    Column("number", String(64)),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("billing_reason", String(32), nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("discount_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("applied_balance_minor", BigInteger, nullable=False),
    Column("applied_credits_minor", BigInteger, nullable=False),  # paid by prepaid credits (wallets)
    Column("credited_minor", BigInteger, nullable=False),
    Column("paid_minor", BigInteger, nullable=False),
    Column("amount_due_minor", BigInteger, nullable=False),
    Column("period_start_on", Date),
    Column("period_end_on", Date),
    Column("issued_on", Date),
    Column("due_on", Date),
    Column("memo", Text),
    Column("bill_run_id", ID),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finalized_at", UTCDateTime),
    Column("paid_at", UTCDateTime),
    Column("voided_at", UTCDateTime),
    UniqueConstraint("legal_entity_id", "number"),
    Index("ix_invoices_status_created", "status", "created_at"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("id", ID, primary_key=True),
    Column("invoice_id", ID, ForeignKey("invoices.id"), nullable=False, index=True),
    Column("subscription_id", ID, ForeignKey("subscriptions.id")),
    Column("price_id", ID, ForeignKey("prices.id")),
    Column("pending_item_id", ID, unique=True),
    Column("charge_key", String(80), nullable=False),
    Column("period_start_on", Date),
    Column("period_end_on", Date),
    Column("revision", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("description", String(500), nullable=False),
    Column("service_start_on", Date),
    Column("service_end_on", Date),
    Column("quantity", ExactDecimal, nullable=False),
    Column("unit_price", ExactDecimal, nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("discount_minor", BigInteger, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("corrects_line_id", ID),
    Column("details", JSON, nullable=False),
    # The natural key that makes a repeated or concurrent bill run a no-op.
    UniqueConstraint("subscription_id", "charge_key", "period_start_on", "revision", name="uq_invoice_lines_key"),
    Index("ix_invoice_lines_sub_period", "subscription_id", "period_end_on"),
)

pending_items = Table(
    "pending_items",
    metadata,
    Column("id", ID, primary_key=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False, index=True),
    Column("price_id", ID, ForeignKey("prices.id")),
    Column("description", String(500), nullable=False),
    Column("quantity", ExactDecimal, nullable=False),
    Column("unit_price", ExactDecimal, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("invoice_id", ID, ForeignKey("invoices.id")),
    Column("created_at", UTCDateTime, nullable=False),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("id", ID, primary_key=True),
    Column("number", String(64), nullable=False),
    Column("invoice_id", ID, ForeignKey("invoices.id"), nullable=False, index=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False),
    Column("legal_entity_id", ID, ForeignKey("legal_entities.id"), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("memo", Text),
    Column("amount_minor", BigInteger, nullable=False),
    Column("to_balance_minor", BigInteger, nullable=False),  # part that became customer credit
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("legal_entity_id", "number"),
)

credit_note_lines = Table(
    "credit_note_lines",
    metadata,
    Column("id", ID, primary_key=True),
    Column("credit_note_id", ID, ForeignKey("credit_notes.id"), nullable=False, index=True),
    Column("invoice_line_id", ID, ForeignKey("invoice_lines.id"), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
)

balance_transactions = Table(
    "balance_transactions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    # positive: credit the customer holds; negative: credit consumed by an invoice
    Column("amount_minor", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("invoice_id", ID),
    Column("credit_note_id", ID),
    Column("created_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("public_id", ID, nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", ID, nullable=False),
    Column("customer_id", ID, index=True),
    Column("data", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_events_type", "type"),
)

# --- API access, idempotency and webhooks ---------------------------------------------------------------------------

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(200), nullable=False),  # argon2; the secret itself is shown once
    Column("scopes", JSON, nullable=False),
    Column("legal_entity_id", ID, ForeignKey("legal_entities.id")),  # None: every entity
    Column("livemode", Boolean, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("api_key_id", ID, primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer),  # None while the first request is still running
    Column("response_body", Text),
    Column("created_at", UTCDateTime, nullable=False),
    # While the first request runs: until when it holds the key (idempotency.LEASE); past it, the request's
    # process is taken for dead and a retry may take the key over. Also what tells the holder from a taker.
    Column("claimed_until", UTCDateTime),
    # When the request's own work committed (written in that work's transaction): from then on the key is never
    # taken over or released, so the work is not done a second time even if its answer was never stored.
    Column("committed_at", UTCDateTime),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", ID, primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("event_types", JSON, nullable=False),  # ["*"] for every type
    Column("secret", String(100), nullable=False),
    Column("legal_entity_id", ID, ForeignKey("legal_entities.id")),
    Column("livemode", Boolean, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("endpoint_id", ID, ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("object_id", ID, nullable=False),
    Column("status", String(16), nullable=False),  # pending, succeeded, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    UniqueConstraint("endpoint_id", "event_id"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    # Order per object: "is an earlier delivery of this object to this endpoint still pending?"
    Index("ix_webhook_deliveries_object_order", "endpoint_id", "object_id", "event_id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("delivery_id", ID, ForeignKey("webhook_deliveries.id"), nullable=False, index=True),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
)

outbox_cursors = Table(
    "outbox_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_event_id", BigInteger, nullable=False),
)

# --- usage metering ---------------------------------------------------------------------------------------------------

meters = Table(
    "meters",
    metadata,
    Column("id", ID, primary_key=True),
    Column("code", String(100), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("aggregation", String(16), nullable=False),
    Column("field", String(100)),
    Column("expression", String(500)),  # a formula over the event's properties giving its value (instead of field)
    Column("filters", JSON, nullable=False),  # property -> accepted values
    Column("group_by", JSON, nullable=False),  # dimensions prices can vary by
    Column("rounding", String(8)),  # ceil, floor, round: of a period's quantity, before pricing
    Column("rounding_precision", Integer, nullable=False, server_default="0"),  # decimals kept (negative: tens...)
    Column("created_at", UTCDateTime, nullable=False),
    Column("deactivated_at", UTCDateTime),  # set: the meter takes no new events (what it has still bills)
    # latest only: a period without events takes the last value reported before it
    Column("carry_over", Boolean, nullable=False, server_default=false()),
)

# Deduplication: one row per (customer, client transaction id), whatever the event's time. Kept apart from the
# events so that the events table can be partitioned by time on PostgreSQL.
usage_event_keys = Table(
    "usage_event_keys",
    metadata,
    Column("customer_id", ID, primary_key=True),
    Column("transaction_id", String(200), primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
)

# Append-only. On PostgreSQL the migration creates it partitioned by month of occurred_at.
usage_events = Table(
    "usage_events",
    metadata,
    Column("id", ID, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("customer_id", ID, nullable=False),
    Column("subscription_id", ID),
    Column("meter_code", String(100), nullable=False),
    Column("transaction_id", String(200), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("value", ExactDecimal),  # the meter's field, for sum / max / latest / weighted sum
    Column("dimension", String(200)),  # the meter's field, for unique count
    Column("group_key", String(500), nullable=False),  # the meter's group-by values, JSON-encoded
    Column("matched", Boolean, nullable=False),  # passes the meter's filters
    Column("properties", JSON, nullable=False),
    # The primary key is the index the aggregation reads (unique because ids are; no query looks events up by id,
    # and deduplication is usage_event_keys'), so writing an event maintains one B-tree, not two. Covering on
    # PostgreSQL: the bill run's aggregation reads a batch's customers from the index alone (an index-only scan),
    # instead of either every event of the month or a random heap read per event.
    PrimaryKeyConstraint(
        "customer_id",
        "meter_code",
        "occurred_at",
        "id",
        name="pk_usage_events",
        postgresql_include=["matched", "group_key", "value", "dimension", "transaction_id"],
    ),
    # SQLite has no INCLUDE: the same columns as keys make it covering there (3.5x faster aggregation, measured).
    Index(
        "ix_usage_events_customer_meter_time_all",
        "customer_id",
        "meter_code",
        "occurred_at",
        "matched",
        "group_key",
        "value",
        "dimension",
        "transaction_id",
    ).ddl_if(dialect="sqlite"),
    postgresql_partition_by="RANGE (occurred_at)",
)

# Canceled usage events (append-only): one row per event, which stops counting. The event itself stays in
# usage_events, with ``matched`` turned off, so that every aggregation leaves it out at no cost; this row says when
# and why. A canceled event's transaction id stays taken.
usage_event_cancellations = Table(
    "usage_event_cancellations",
    metadata,
    Column("customer_id", ID, ForeignKey("customers.id"), primary_key=True),
    Column("transaction_id", String(200), primary_key=True),
    Column("event_id", ID, nullable=False),
    Column("meter_code", String(100), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("canceled_at", UTCDateTime, nullable=False),
    Column("reason", String(500)),
)

# --- wallets ----------------------------------------------------------------------------------------------------------

# Prepaid credits. A wallet holds grants; invoices consume grants when they are finalized. Credits are exact
# decimals; each grant also carries its value in money (minor units), fixed when it is granted, which is what
# invoices consume. Balances are recomputed from the ledger (wallet_transactions) and checked against the grants.
wallets = Table(
    "wallets",
    metadata,
    Column("id", ID, primary_key=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("priority", Integer, nullable=False),  # lower is consumed first
    Column("rate", ExactDecimal, nullable=False),  # money per credit: 1 for plain money credits
    Column("status", String(16), nullable=False),  # active, voided
    Column("top_up_threshold", ExactDecimal),  # credits: under this, buy top_up_credits
    Column("top_up_credits", ExactDecimal),
    Column("top_up_expires_days", Integer),  # credits bought by a top-up expire after this many days
    Column("created_at", UTCDateTime, nullable=False),
    Column("voided_at", UTCDateTime),
    # The fees it may pay: {"fee_types": [...], "meters": [...], "prices": [...]}; NULL: any fee.
    Column("applies_to", JSON(none_as_null=True)),
    Column("low_balance_threshold", ExactDecimal),  # credits: under this, a wallet.balance_low event
)

wallet_grants = Table(
    "wallet_grants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("wallet_id", ID, ForeignKey("wallets.id"), nullable=False, index=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # free, paid
    Column("source", String(16), nullable=False),  # manual, top_up
    # pending (a purchase not paid yet), active, expired, voided
    Column("status", String(16), nullable=False),
    Column("credits", ExactDecimal, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),  # the credits' value, rounded once when granted
    Column("remaining_credits", ExactDecimal, nullable=False),
    Column("remaining_minor", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime),
    # Bought credits granted when paid (a top-up, a recurring purchase) last this many days from their payment:
    # ``expires_at`` is set then. NULL for the others, whose ``expires_at`` is known when they are made.
    Column("expires_days", Integer),
    Column("invoice_id", ID, ForeignKey("invoices.id")),  # the purchase invoice of a paid grant
    # What caused it, once: "top_up:<invoice id>" for a top-up; NULL for a manual grant.
    Column("cause_key", String(80)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("granted_at", UTCDateTime),
    UniqueConstraint("wallet_id", "cause_key"),
    Index("ix_wallet_grants_customer_status", "customer_id", "status"),
    Index("ix_wallet_grants_status_expires_at", "status", "expires_at"),
)

# The ledger: append-only. A grant's remaining credits and money are the sum of its entries; a unique key per
# (grant, cause) makes a repeated consumption, expiry or void a no-op that the database enforces.
wallet_transactions = Table(
    "wallet_transactions",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("wallet_id", ID, ForeignKey("wallets.id"), nullable=False),
    Column("grant_id", ID, ForeignKey("wallet_grants.id"), nullable=False),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False),
    # grant, consumption, expiry, void, restore (an invoice that consumed credits was voided)
    Column("kind", String(16), nullable=False),
    Column("cause_key", String(80), nullable=False),  # grant, consume:<invoice>, expire, void, restore:<invoice>
    Column("credits", ExactDecimal, nullable=False),  # signed: positive adds to the wallet
    Column("amount_minor", BigInteger, nullable=False),  # signed, like credits
    Column("invoice_id", ID),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("grant_id", "cause_key"),
    Index("ix_wallet_transactions_wallet_seq", "wallet_id", "seq"),
    Index("ix_wallet_transactions_invoice_id", "invoice_id"),
)

# A schedule of grants: the same credits every interval, from a first day up to an optional end day (excluded).
# Each occurrence's grant has the cause "recurring:<schedule id>:<index>", unique per wallet, so no occurrence is
# granted twice.
wallet_recurring_grants = Table(
    "wallet_recurring_grants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("wallet_id", ID, ForeignKey("wallets.id"), nullable=False, index=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False),
    Column("credits", ExactDecimal, nullable=False),
    Column("paid", Boolean, nullable=False),  # bought: an invoice per occurrence, granted when it is paid
    Column("grant_before_payment", Boolean, nullable=False),
    Column("interval_unit", String(16), nullable=False),
    Column("interval_count", Integer, nullable=False),
    Column("starts_on", Date, nullable=False),  # the first occurrence's day, in the customer's time zone
    Column("ends_on", Date),  # no occurrence on or after this day
    Column("expires_days", Integer),  # each occurrence's credits expire this many days after they are granted
    Column("next_index", Integer, nullable=False),  # occurrences granted so far
    Column("next_on", Date),  # the next occurrence's day; NULL once the schedule has ended or was canceled
    Column("status", String(16), nullable=False),  # active, ended, canceled
    Column("created_at", UTCDateTime, nullable=False),
    Column("canceled_at", UTCDateTime),
    Index("ix_wallet_recurring_grants_status_next_on", "status", "next_on"),
)

# --- usage alerts ---------------------------------------------------------------------------------------------------

# Threshold billing: when a subscription's unbilled usage of its open period reaches this amount, it is invoiced at
# once. Declared here (not in ``subscriptions`` above) to keep this feature's schema in one place.
subscriptions.append_column(Column("usage_threshold_minor", BigInteger))

alerts = Table(
    "alerts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("customer_id", ID, ForeignKey("customers.id"), nullable=False, index=True),
    Column("subscription_id", ID, ForeignKey("subscriptions.id")),  # None: each of the customer's subscriptions
    Column("kind", String(16), nullable=False),  # usage (a meter's quantity) or spend (the usage amount)
    Column("meter_code", String(100)),  # usage alerts
    Column("group_values", JSON(none_as_null=True)),  # usage alerts on one group: {dimension: value}
    Column("thresholds", JSON, nullable=False),  # ascending; usage: decimal strings, spend: minor units
    Column("currency", String(3)),  # spend alerts
    Column("created_at", UTCDateTime, nullable=False),
)

# One row per threshold crossed, per subscription billing period: the key makes "exactly once" a unique index.
alert_triggers = Table(
    "alert_triggers",
    metadata,
    Column("id", ID, primary_key=True),
    Column("alert_id", ID, ForeignKey("alerts.id"), nullable=False),
    Column("subscription_id", ID, nullable=False),
    Column("period_start_on", Date, nullable=False),
    Column("period_end_on", Date, nullable=False),
    Column("threshold", String(64), nullable=False),  # canonical text of the threshold
    Column("value", String(64), nullable=False),  # what was measured when it fired
    Column("triggered_at", UTCDateTime, nullable=False),
    UniqueConstraint("alert_id", "subscription_id", "period_start_on", "threshold", name="uq_alert_triggers_key"),
)

# Customers whose usage is watched (they have alerts or a usage threshold). Ingestion sets ``dirty`` for the
# customers of each batch (one indexed UPDATE; unwatched customers have no row); the evaluation claims dirty rows.
usage_watches = Table(
    "usage_watches",
    metadata,
    Column("customer_id", ID, ForeignKey("customers.id"), primary_key=True),
    Column("dirty", Boolean, nullable=False),
    # Claimed by an evaluation (its mark cleared) until then (usage_watch.LEASE); NULL once evaluated. A claim
    # whose time has passed belonged to a process that died: the customer is claimable again.
    Column("claimed_until", UTCDateTime),
)
