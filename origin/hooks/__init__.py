"""Origin functions and webhooks: the hooks stream the apply step fills and the runner
that drains it (see docs/webhooks.md)."""
