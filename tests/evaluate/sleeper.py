"""A function for the fresh-process tests: say who you are, then never return."""

import os
import time
from pathlib import Path


def sleep_forever(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        time.sleep(1)
