"""Corpus readers, the visual-token store and the training loader."""
