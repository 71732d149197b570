"""Background jobs that drain the outbox: webhook delivery."""
