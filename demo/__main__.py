"""Placeholder until the demo lands: says what is coming and exits cleanly."""

if __name__ == "__main__":
    print("livestatus demo: the full pipeline demo (MongoDB stand-in, simulator, projector, API) is being built.")
    print("For now run `make test` to see the projection core at work.")
