"""The website's own account store: people, their sign-in identities, roles and one-time sign-in links.

Separate from the backend's users on purpose: the backend knows a person only as the
``{id, display_name, auth_method}`` the website sends; roles, e-mail addresses and sessions stay here.
"""

from oasst.web.accounts.models import Account, Identity, LoginToken, Role
from oasst.web.accounts.store import AccountStore, BackendIdentity

__all__ = ["Account", "AccountStore", "BackendIdentity", "Identity", "LoginToken", "Role"]
