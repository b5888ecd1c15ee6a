"""The application: `uvicorn main:app`. Everything it is made of lives in `tasks_service`."""

from tasks_service import create_app

app = create_app()
