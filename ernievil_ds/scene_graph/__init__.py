"""Caption -> scene graph parsing on spaCy."""
