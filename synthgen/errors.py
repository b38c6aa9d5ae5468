"""User-facing errors.

Anything a user can cause (a missing path, an empty folder, an impossible range, a checkpoint of
the wrong kind) raises a :class:`SynthgenError` subclass with a message that says what is wrong
and what to do. The CLI prints the message, without a traceback, and exits with ``exit_code``.
"""


class SynthgenError(Exception):
    """Base class: an error the user can fix. ``str(err)`` is the whole message."""

    exit_code = 2


class InputError(SynthgenError):
    """Bad input: missing or empty path, unreadable data, impossible option values."""

    exit_code = 2


class OutputExistsError(SynthgenError):
    """The output folder already holds data and neither --overwrite nor --resume was given."""

    exit_code = 2


class NotAvailableError(SynthgenError):
    """A named resource (model weights, dataset) is not on this machine, or not supported yet."""

    exit_code = 3


class WriteError(SynthgenError):
    """Writing the output failed (disk full, permission denied); what was written is intact."""

    exit_code = 4


class Interrupted(SynthgenError):
    """The user stopped a finite job (Ctrl-C, SIGTERM) before it finished; the message says what
    was kept and how to continue. Exit code 130, as shells report a job ended by SIGINT."""

    exit_code = 130
