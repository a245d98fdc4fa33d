"""Conditioning: the frozen text encoder and its embedding cache (text.py), classifier-free guidance."""
