"""The project's own models: the T1-style field diffusion prior, its text encoder, sampling and training.

Importing this package is light (torch only); ``tokenizers`` loads when a tokenizer is built.
"""
