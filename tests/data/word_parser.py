"""A stand-in for the spaCy scene-graph parser in importer tests (fast and picklable)."""

from __future__ import annotations

NOUNS = ("dog", "cat", "man", "ball", "table", "guys")


class WordParser:
    """Every known noun is an object; no attributes, no relations."""

    def parse_stream(self, captions):
        for caption in captions:
            objects, start = [], 0
            for word in caption.split():
                start = caption.index(word, start)
                if word.strip(".,").lower() in NOUNS:
                    objects.append(
                        {"name": word.strip(".,").lower(), "span": [start, start + len(word.strip(".,"))]}
                    )
                start += len(word)
            yield {"caption": caption, "objects": objects, "attributes": [], "relations": []}
