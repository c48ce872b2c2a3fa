"""submitit, imported without the logging configuration it applies when first imported.

Importing submitit runs `logging.config.dictConfig` (unless SUBMITIT_LOG_LEVEL=NOCONFIG):
that flushes, closes and removes every handler the process already has (a user's, absl's),
closing the streams they write to, and binds submitit's own handlers to the sys.stdout and
sys.stderr of that moment. Since `sweeps.sweep` imports the Slurm launcher, importing the
library did this to any program (and, in one pytest process, closed pytest's capture
stream: the next test writing to stderr failed). Here the import skips it; submitit's
logger keeps a level SUBMITIT_LOG_LEVEL names, and its warnings reach stderr through
logging's last-resort handler. Slurm tasks (submitit's own process) are unaffected.
"""

from __future__ import annotations

import logging
import os

LOG_ENV = "SUBMITIT_LOG_LEVEL"

_asked = os.environ.get(LOG_ENV)
os.environ[LOG_ENV] = "NOCONFIG"
try:
    import submitit
finally:
    if _asked is None:
        os.environ.pop(LOG_ENV, None)
    else:
        os.environ[LOG_ENV] = _asked
if _asked and _asked.upper() != "NOCONFIG":
    logging.getLogger("submitit").setLevel(int(_asked) if _asked.isdigit() else _asked.upper())

__all__ = ["submitit"]
