"""The one-command demo: a MongoDB stand-in, a traffic simulator, the projector and the API."""
