"""Webhooks: signed POSTs of uplink events, with retries, a breaker per URL and a
dead-letter stream (see docs/webhooks.md)."""
