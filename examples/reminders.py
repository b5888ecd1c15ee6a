"""The README's per-user reminder: routes of your own that make and delete a user's schedule.

Run with: uvicorn examples.reminders:app
"""

from fastapi import FastAPI, Response
from pydantic import BaseModel

from tasks.send_email import send_email
from tasks_service import ServiceDep, create_app

app: FastAPI = create_app()


class Signup(BaseModel):
    user_id: int
    email: str
    tz: str = "UTC"


@app.post("/signup", status_code=201)
async def signup(body: Signup, service: ServiceDep) -> dict[str, str | None]:
    reminder = await service.create_schedule(
        send_email,
        id=f"reminder:{body.user_id}",
        cron="0 9 * * 1",  # Mondays at 09:00, in the user's own time zone
        tz=body.tz,
        params={"to": body.email, "subject": "Your week", "body": "Here is what's new."},
    )
    return {"reminder": reminder.id, "next_at": reminder.to_json()["next_run_at"]}


@app.delete("/users/{user_id}", status_code=204)
async def delete_user(user_id: int, service: ServiceDep) -> Response:
    await service.delete_schedule(f"reminder:{user_id}")  # no reminder fires after this
    return Response(status_code=204)
