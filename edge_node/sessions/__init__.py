"""edge_node.sessions."""
