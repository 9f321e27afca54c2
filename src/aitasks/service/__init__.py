"""Running the parts of the service as processes (embedded Redis, supervisor)."""
