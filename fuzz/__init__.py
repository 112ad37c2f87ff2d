"""Coverage-guided fuzzing (atheris) of what a document can make the projector do."""
