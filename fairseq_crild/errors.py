"""The one base class of the errors this project raises for inputs it refuses.

Every such error (a malformed GLUE file, a checkpoint that is truncated or of the wrong role,
a teacher that does not fit the data, an export that fails its parity gate, a pipeline stage
that failed, ...) derives from :class:`CrildError` as well as from the built-in class it
always had (``ValueError``, ``RuntimeError``, ``FileExistsError``), so existing ``except``
clauses keep working. A command catches ``CrildError`` and prints its message as one line,
``PROG: error: MESSAGE``, instead of a traceback.
"""


class CrildError(Exception):
    """Base of the project's errors: the message says what is wrong and how to fix it."""

