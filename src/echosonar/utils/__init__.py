"""Small shared helpers: seeding and run provenance, device choice, logging."""
