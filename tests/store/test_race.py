"""Two processes promote different versions at once: exactly one wins, both are recorded."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

from store_procs import Worker, race

from evertrain.store import Store

ROUNDS = 100
START, MINE, THEIRS = 1, 2, 3


def test_two_promotions_from_the_same_champion_one_wins(
    db_url: str, artifacts_url: str, workers: Callable[[], Worker]
) -> None:
    pair = [workers(), workers()]
    targets = [MINE, THEIRS]
    wins: Counter[int] = Counter()
    with Store(db_url, artifacts_url) as store:
        for version in (START, MINE, THEIRS):
            store.registry.register(
                "m", store.artifacts.put(json.dumps(f"v{version}").encode()), framework="json", actor="t"
            )
        store.registry.promote("m", START, actor="t", expected=None)
        for round_ in range(ROUNDS):
            seen = len(store.registry.history("m"))
            answers = race(
                pair,
                [["promote", db_url, artifacts_url, "m", target, START] for target in targets],
                first=round_ % 2,
            )
            outcomes = [a["outcome"] for a in answers]
            assert sorted(outcomes) == ["applied", "conflict"], f"round {round_}: {outcomes}"
            winner = targets[outcomes.index("applied")]
            loser = targets[outcomes.index("conflict")]
            wins[winner] += 1
            assert store.registry.get_alias("m", "champion") == winner

            # The history holds both attempts, as they happened: the winner moved the
            # champion from START; the loser found the winner's version, not START.
            attempts = store.registry.history("m")[seen:]
            assert [(h.outcome, h.from_version, h.to_version, h.expected_version) for h in attempts] == [
                ("applied", START, winner, START),
                ("conflict", winner, loser, START),
            ]
            assert len({h.actor for h in attempts}) == 2

            store.registry.set_alias("m", "champion", START, actor="t", expected=winner, action="reset")

        actions = Counter(e.action for e in store.audit.entries())
        assert actions == {"register": 3, "promote": 1 + ROUNDS, "reset": ROUNDS}
        assert store.audit.verify().ok
    # Both racers won some rounds: they really ran at the same time.
    assert wins[MINE] > 0 and wins[THEIRS] > 0, wins
