"""The one exception type the CLI turns into a clear message instead of a traceback."""


class UserError(Exception):
    """A bad input the user can fix; the message says how."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for wrapping a library error into a UserError."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]


class Interrupted(UserError):
    """A training stopped by SIGTERM or SIGINT after saving (stopping.py): the command exits with
    stopping.STOPPED, "resumable"; callers running several trainings stop too."""


DIVERGED = 3  # the exit status of a run stopped by a non-finite loss: distinct from a crash (1) and a bad input (2)
DIVERGED_FILE = "diverged.json"  # in the run folder: where a run that diverged stopped (divergence.py writes it)


class Diverged(UserError):
    """A non-finite loss stopped the run (trainer.py): its last good checkpoint is kept and RUN_DIR/diverged.json
    says where it stopped; the command exits with DIVERGED."""
