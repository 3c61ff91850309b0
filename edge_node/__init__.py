"""edge_node."""
