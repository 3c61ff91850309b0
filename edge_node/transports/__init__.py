"""edge_node.transports."""
