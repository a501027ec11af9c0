"""The rollout commands under the module name that serving's HTTP API imports.

The commands live in :mod:`evertrain.rollout.commands` and the record in
:mod:`evertrain.rollout.state`; new code imports them from :mod:`evertrain.rollout`.
"""

from __future__ import annotations

from evertrain.rollout.commands import promote_now, rollback_now, start_rollout
from evertrain.rollout.state import rollout_status

__all__ = ["promote_now", "rollback_now", "rollout_status", "start_rollout"]
