"""Clients of services sgeo talks to over the network (OpenAI-compatible chat endpoints)."""
