"""newton_losses: Newton losses for PyTorch."""
