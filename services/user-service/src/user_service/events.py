"""What user-service publishes. It consumes nothing.

`users.registered` (stream PLATFORM, through the outbox with the insert): a new account exists.
    data: {user_id, email, roles, plan, created_at}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aitrading.events import Event

if TYPE_CHECKING:
    from user_service.users import User

SOURCE = "user-service"
USERS_REGISTERED = "users.registered"


def user_registered(user: User) -> Event:
    data = {
        "user_id": str(user.id),
        "email": user.email,
        "roles": list(user.roles),
        "plan": user.plan,
        "created_at": user.created_at.isoformat(),
    }
    return Event.new(USERS_REGISTERED, USERS_REGISTERED, data, source=SOURCE)
