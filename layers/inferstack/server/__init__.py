"""Hosts for the data plane: the FastAPI app and the local `inferstack serve` server."""
