"""Developer tooling: the reference receiver for the services-data HTTP API."""
