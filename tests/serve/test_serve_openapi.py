"""Schemathesis against the app's own OpenAPI document, on a live loopback server.

Every documented operation gets generated requests that fit its schema and requests
that break it; every answer must be documented (status, content type, body schema)
and none may be a 5xx. Half the cases aim at the served model so that bodies reach
validation rather than stopping at a 404.

One check is left out: "schema-valid data is accepted". The body schema is the same for
every model (KServe V1), while each model's inputs are its own (published at
``GET /v1/models/{name}``); a body that fits the generic schema but not the model gets the
documented 422 naming the field, which is the point of validation.
"""

from __future__ import annotations

import random
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from servekit import LiveServer, classifier, client, constant, register, wait_until

from evertrain.serve import create_app
from evertrain.spec import LogSpec, ServingSpec
from evertrain.store import Store

MAX_EXAMPLES = 12  # per operation and mode: bounded, the suite is on two shared cores
TOKEN = "t"
SEED = 5


def test_every_operation_keeps_its_documented_promises(store: Store) -> None:
    store.registry.promote("m", register(store, "m", classifier(0)), actor="test")
    register(store, "m", constant(2.0))
    app = create_app(
        store,
        serving=ServingSpec(poll_seconds=0.2, max_batch=20, log=LogSpec(flush_seconds=0.2)),
        admin_token=TOKEN,
    )
    picker = random.Random(SEED)
    with LiveServer(app) as live, client(live.url) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 20)
        config = SchemathesisConfig.from_dict({"auth": {"openapi": {"bearer": {"bearer": TOKEN}}}})
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json", config=config)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 11
        calls = 0
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=MAX_EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                def run(case: Any) -> None:
                    nonlocal calls
                    if case.path_parameters and "name" in case.path_parameters and picker.random() < 0.5:
                        case.path_parameters["name"] = "m"
                    case.call_and_validate(excluded_checks=[positive_data_acceptance])
                    calls += 1

                try:
                    run()
                except Unsatisfiable:
                    # Nothing to break in an operation without parameters or body (GET /healthz).
                    assert mode == GenerationMode.NEGATIVE and not operation.body, operation.label
        assert calls >= len(operations) * 2
        # Still serving after all of it.
        assert c.get("/readyz").status_code == 200
