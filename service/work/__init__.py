"""Generation work: everything a worker process does to turn queued tasks into stored stories.

Owns the worker loop (`worker`: claim, prepay, run, flush, heartbeat, reap, index), turning one
claimed task into a result (`task`), the wiring of a worker process from settings (`wiring`),
the choice of provider or built-in simulator (`provider`) and the rate and budget limits that
all processes share through Postgres (`shared_limits`). It may import `service.store`,
`service.dataset` (dedup on arrival), the root modules (settings, db) and `generator/`; never
`service.api` or `service.dashboard`. Nothing is imported here, so `service.work.provider`
stays cheap for the API to load.
"""
