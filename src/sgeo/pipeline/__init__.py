"""Datasets, image decoding and batching: everything between files on disk and model inputs."""
