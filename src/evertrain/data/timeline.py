"""The event-time grid of the generated example tables (shared by every generator)."""

#: 2026-01-01T00:00:00Z: a fixed start so generated tables are identical everywhere.
START_EPOCH = 1_767_225_600.0
#: One row per minute of event time.
STEP_SECONDS = 60.0
#: Labels arrive about a day after the event.
LABEL_DELAY_SECONDS = 86_400.0
