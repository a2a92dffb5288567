"""Griffe extension for jmod's API pages: `Example:` sections render as examples.

jmod's docstrings head their runnable `>>>` examples with `Example:` (the
house style, docs STYLE); Google style as griffe reads it knows only
`Examples:`, and would render the session as prose (its output lines then
read as Markdown links). Renaming the heading before parsing keeps the
docstrings as they are.
"""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
