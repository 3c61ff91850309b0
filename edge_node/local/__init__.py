"""edge_node.local."""
