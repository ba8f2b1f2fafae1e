"""The cost truth, pure: prices, billing, the footer, limits, reports and advice."""
