"""The job domain: records, events, artifacts, file inputs."""
