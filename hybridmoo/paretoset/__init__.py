"""Pareto set learning over a supernet: a preference-conditioned model that returns the
sub-network for any trade-off without a new search."""
