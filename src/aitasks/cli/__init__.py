"""Command line: aitasks run|api|worker|keys."""
