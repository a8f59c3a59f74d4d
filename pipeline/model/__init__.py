"""Model code: the pretrained multilingual encoder base and what is built on it."""
