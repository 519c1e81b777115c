"""`htp serve`: the FastAPI app, its guard and metrics, the OpenAI embeddings route, the search page, and the one
client every caller of a running service uses."""
