"""The README's example: a route of your own that queues a tracked `send_email` task.

Run with: uvicorn examples.signup:app
"""

from fastapi import FastAPI
from pydantic import BaseModel

from tasks.send_email import send_email
from tasks_service import AddTask, create_app

app: FastAPI = create_app()


class Signup(BaseModel):
    email: str


@app.post("/signup", status_code=201)
async def signup(body: Signup, add_task: AddTask) -> dict[str, str]:
    task_id = await add_task(
        send_email, to=body.email, subject="Welcome!", body="Thanks for signing up."
    )
    return {"email": body.email, "welcome_email_task": task_id}
