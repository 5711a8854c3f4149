"""What every command needs: the platform (built on first use) and who is acting."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field

from cityward.bootstrap import Platform, bootstrap
from cityward.domain.organizations import Caller
from cityward.services import organizations, tokens


@dataclass
class CliContext:
    _platform: Platform | None = None
    _caller: Caller | None = field(default=None)

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = bootstrap()
        return self._platform

    @property
    def caller(self) -> Caller:
        """CITYWARD_TOKEN acts as that token's organization; otherwise the local operator."""
        if self._caller is None:
            plat = self.platform
            token = plat.settings.token
            if token is not None:
                self._caller = tokens.authenticate(plat.uow, token.get_secret_value())
            else:
                self._caller = organizations.local_operator(plat.uow, _user())
        return self._caller


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


CTX = CliContext()
