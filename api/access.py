"""Who is calling: HTTP Basic against the server's logins (sharing the page's brake on guessing), and the owner a
job is filed under so ``/progress``, ``/interrupt`` and ``/skip`` reach only the caller's own jobs."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from backend.serving.logins import Logins


def basic_auth(auth: Logins | None) -> Callable:
    """The login dependency: one callable per server, so FastAPI runs it once a request however many uses name it."""
    security = HTTPBasic(auto_error=False)

    def check(request: Request, credentials: HTTPBasicCredentials | None = Depends(security)) -> str | None:
        """The caller's login, or None when the server has none. Any failure is a 401 (no route answers)."""
        if auth is None:
            return None
        # The page's login and the API share one brake per address, so guessing here is as slow as there.
        brake, address = auth.brake, request.client.host if request.client else ""
        if (wait := brake.wait(address)) > 0:
            raise HTTPException(
                429,
                f"Too many failed logins from your address; try again in {int(wait) + 1} s.",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        if credentials is None or not auth.verify(credentials.username, credentials.password):
            if credentials is not None:
                brake.failed(address, credentials.username)
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        brake.succeeded(address)
        return credentials.username

    return check


def owner(login: str | None, request: Request) -> str:
    """The caller's jobs: its login's, else its address's."""
    if login is not None:
        return f"user:{login}"
    return f"addr:{request.client.host if request.client else '?'}"
