"""The failures a user can cause or fix; the CLI prints them as one line each."""


class LossbenchError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class ParamsError(LossbenchError):
    """Bad params.yaml: the message names the key path and what is allowed."""


class DatasetUnavailable(LossbenchError):
    """The dataset is neither on disk nor downloadable, or its files are damaged."""


class MissingInput(LossbenchError):
    """A stage's input is missing; the message names the stage that makes it."""


class TrainingDiverged(LossbenchError):
    """The loss became NaN or infinite."""


class OutputWriteError(LossbenchError):
    """An output file could not be written (disk full, permissions, ...)."""


class TrainingInterrupted(LossbenchError):
    """Ctrl-C or SIGTERM during training; completed epochs are checkpointed."""
