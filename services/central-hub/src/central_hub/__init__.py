"""central-hub: the fleet's registry view from heartbeats, fleet health and the dependency graph."""
