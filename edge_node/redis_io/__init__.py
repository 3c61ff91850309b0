"""edge_node.redis_io."""
