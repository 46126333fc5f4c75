"""Place for the signed-in scenarios that come with the auth and orders issues. Nothing here sends traffic.

Planned users (add each to `USERS` when its endpoints exist; `locustfile.py` picks them up):

- `SignInUser` (tags `auth`, `login`): register once, then log in with password + TOTP code, refresh the
  token, log out. Objective of its own: login p95 (password hashing is deliberately slow).
- `OrderingUser` (tags `orders`, `history`, `checkout`): signed in, reads its order history (paginated) and
  places orders on a few hot products concurrently, checking stock never goes negative (no overselling).

Their request names should follow the same rule: the route template, e.g. `/api/consumer/orders/{id}`.
Give them `weight = 0` defaults and `--signin-weight` / `--ordering-weight` options in `users.add_arguments`,
so existing runs and thresholds are unchanged until someone asks for them.
"""

from __future__ import annotations

from locust import User

TAGS: tuple[str, ...] = ("auth", "login", "orders", "history", "checkout")
USERS: list[type[User]] = []
