"""Visual-Symbolic Transformer: model, losses, training loop and generation."""
