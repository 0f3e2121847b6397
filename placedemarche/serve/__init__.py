"""The categorisation service: the FastAPI app, dynamic batching, the seller page, Ray Serve."""
