"""aitasks: a self-hosted service for running AI jobs in the background."""

__version__ = "0.1.0"
