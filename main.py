"""The application: `uvicorn main:app`. Everything it is made of lives in `tasks_service`."""

import sys

from tasks_service import create_app
from tasks_service.config import SettingsError

try:
    app = create_app()
except SettingsError as exc:  # one clear line, not a traceback, and a non-zero exit
    sys.exit(f"the service cannot start: {exc}")
