"""feature-engineering: technical indicators and statistics over stored and live bars; user feature sets."""
