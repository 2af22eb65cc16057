"""Safety pillar: the guard (rules and a classifier) that data, serve and evaluate use."""
