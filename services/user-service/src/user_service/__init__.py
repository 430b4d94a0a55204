"""user-service: the platform's identity provider — users, password auth, JWT issuing, JWKS, API keys."""
