"""What every command needs: the platform (built on first use) and who is acting.

Nothing heavy is imported here: the platform (SQLAlchemy, settings) loads when a command first asks
for it, so `cityward --help` and `--version` never pay for it.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cityward.bootstrap import Platform
    from cityward.domain.organizations import Caller


@dataclass
class CliContext:
    _platform: Platform | None = None
    _caller: Caller | None = field(default=None)

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            from cityward.bootstrap import bootstrap

            self._platform = bootstrap()
        return self._platform

    @property
    def caller(self) -> Caller:
        """CITYWARD_TOKEN acts as that token's organization; otherwise the local operator."""
        if self._caller is None:
            from cityward.services import organizations, tokens

            plat = self.platform
            token = plat.settings.token
            if token is not None:
                self._caller = tokens.authenticate(plat.uow, token.get_secret_value())
            else:
                self._caller = organizations.local_operator(plat.uow, _user())
        return self._caller

    def require_platform(self, what: str) -> None:
        """Server processes (`serve`, `connect`, `rollout run`, `worker`) act as the platform, not as
        a token's organization: under CITYWARD_TOKEN only a city administrator's token may start one."""
        if self.platform.settings.token is not None:
            from cityward.domain.access import Action, may
            from cityward.errors import PermissionDenied

            if not may(self.caller, Action.PLATFORM):
                raise PermissionDenied(f"only a city administrator may {what}",
                                       hint="it acts for the whole platform; unset CITYWARD_TOKEN on the server")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


CTX = CliContext()
