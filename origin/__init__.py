"""origin."""
