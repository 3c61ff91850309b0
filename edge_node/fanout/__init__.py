"""edge_node.fanout."""
