"""``make soak``: the pipeline under steady load for an hour (or less), faults included."""
