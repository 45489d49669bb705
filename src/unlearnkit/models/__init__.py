"""Loading, saving and building causal language models."""
