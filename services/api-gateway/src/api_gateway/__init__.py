"""The api-gateway: the single public entry point of the platform (port 8000)."""
