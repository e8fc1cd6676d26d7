"""Training: windows over cached features, losses, the loop, run directories."""
