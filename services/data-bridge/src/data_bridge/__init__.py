"""data-bridge: market feeds in, normalized ticks, closed bars and live quotes out."""
