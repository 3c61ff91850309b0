"""edge_node.neighbours."""
