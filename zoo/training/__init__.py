"""Training scripts for the default models whose weights are made here rather than downloaded."""
