"""edge_node.runtime."""
