"""Talking to a backend without IPython: the connection, the embedded backend, and driving one request's events."""
