# Load tests and the HTTP ceiling benchmark; included by the top Makefile. See loadtests/README.md.
#   make load                        URL= USERS=50 DURATION=30s  (no URL: a throw-away service is started)
#   make load-distributed WORKERS=2  same, Locust master + WORKERS local workers
#   make load-ui URL= UI_PORT=        Locust's web UI on 127.0.0.1, same scenarios (no URL: a throw-away service)
#   make load-steps STEPS=10,50,100,200,400 STEP_DURATION=10s
#   make bench-http WRK_ARGS="-t 2 -c 64 -d 10s" BENCH_ENV="CACHE_ENABLED=false" [COMPARE=CACHE_ENABLED=false,true]
#   make bench-mix [MIX_DURATION=10s] [SIDE_BY_SIDE=1] [MIX_ARGS="--passes 2 --runs on,off,writer"]
#   make bench-compress [COMPRESS_ARGS="--url URL | --load DIR --repeat 7"]
#   make bench-scale [SCALE_PRODUCTS=1000000] [URL=] [SCALE_ARGS="--requests 200 --budget 30"]
#   make bench-metrics [METRICS_ARGS="-d 5s --passes 5"]  (metrics+trace on vs off, exactness)
#   make bench-sync [SYNC_ITEMS=50000] [SYNC_IMAGES=500]  (full Zoho sync from the fake: time, peak RSS)
#   make sync-demo [SYNC_ITEMS=2000]   (the fake Zoho, then a full sync of the demo database)
#   make sync-load [SYNC_ITEMS=20000] [SYNC_LOAD_ARGS="-c 4 --rate 100 | --locust --phase 20s --rounds 3 [--fresh]"]
#                                     (catalog p99 while a full sync runs: wrk, or make load's Locust run)
#   make bench-logins [LOGINS_ARGS="--phase 20s --rounds 2 --logins 200"]  (make load's p99 during a sign-in flood)
#   make bench-orders [BENCH_ORDERS_ARGS="--duration 10s --connections 32"]  (the orders table: correctness, orders/s, p99)
#   make load-orders URL= USERS=20 DURATION=30s  (Locust: ordering shoppers only, SLO gate)
# Common: LOAD_PRODUCTS=10000 LOAD_PROCESSES=2 (the started service), SERVICE_ENV="K=V ...",
#         LOCUST_ARGS="--tags browse detail" (passed to Locust), THRESHOLDS=loadtests/thresholds.toml,
#         SLO_P95_MS / SLO_P99_MS / SLO_MAX_FAILURES / SLO_MIN_RPS / SLO_MIN_SAMPLES (override objectives).
URL ?=
USERS ?= 50
DURATION ?= 30s
WORKERS ?= 2
STEPS ?= 10,50,100,200,400
STEP_DURATION ?= 10s
LOAD_PRODUCTS ?= 10000
LOAD_PROCESSES ?= 2
SERVICE_ENV ?=
LOCUST_ARGS ?=
THRESHOLDS ?=
WRK_ARGS ?= -t 2 -c 64 -d 10s
BENCH_ENV ?=
COMPARE ?=
UI_PORT ?=

LOAD_RUN = $(PY) -m loadtests.run_load $(if $(URL),--url $(URL)) --products $(LOAD_PRODUCTS) \
	--processes $(LOAD_PROCESSES) $(foreach e,$(SERVICE_ENV),--service-env $(e)) \
	$(if $(THRESHOLDS),--thresholds $(THRESHOLDS))

.PHONY: load load-distributed load-ui load-steps bench-http bench-mix bench-compress bench-scale bench-sync sync-demo sync-load bench-logins freshness redis-stall

## Locust headless + SLO gate (exit 1 when an objective is missed); reports in loadtests/reports/<ts>/.
load: venv
	$(LOAD_RUN) --users $(USERS) --duration $(DURATION) $(if $(LOCUST_ARGS),-- $(LOCUST_ARGS))

## The same with a Locust master and $(WORKERS) worker processes on this machine.
load-distributed: venv
	$(LOAD_RUN) --users $(USERS) --duration $(DURATION) --workers $(WORKERS) $(if $(LOCUST_ARGS),-- $(LOCUST_ARGS))

## Locust's web UI (bound to 127.0.0.1; prints its URL) with the same scenarios; Ctrl-C stops it (and the
## throw-away service started when URL is empty).
load-ui: venv
	$(LOAD_RUN) --ui $(if $(UI_PORT),--ui-port $(UI_PORT)) $(if $(LOCUST_ARGS),-- $(LOCUST_ARGS))

## Step load (one short run per user count): steps.csv and steps.png (throughput, p50/p95/p99 vs users).
load-steps: venv
	$(LOAD_RUN) --steps $(STEPS) --step-duration $(STEP_DURATION) $(if $(LOCUST_ARGS),-- $(LOCUST_ARGS))

## wrk ceiling benchmark: service endpoints vs a bare Robyn route serving the same bytes.
bench-http: venv
	$(PY) -m loadtests.bench_http $(WRK_ARGS) --processes $(LOAD_PROCESSES) --products $(LOAD_PRODUCTS) \
		$(if $(URL),--url $(URL)) $(foreach e,$(BENCH_ENV),--env $(e)) $(if $(COMPARE),--compare $(COMPARE))

## Shopper mix with wrk: many distinct URLs from the catalog; cache on, cache off, cache on + 20 commits/s.
## SIDE_BY_SIDE=1 adds the seed's own stack on the same mix, alternating, with ratios (needs
## `../shared/peer/measure.sh up` first: its PostgreSQL on 55433 and Redis on 56379; PEER_DIR, SCRATCH).
MIX_DURATION ?= 10s
SIDE_BY_SIDE ?=
MIX_ARGS ?=
bench-mix: venv
	$(PY) -m loadtests.bench_mix --duration $(MIX_DURATION) --products $(LOAD_PRODUCTS) \
		$(if $(filter 1 true yes,$(SIDE_BY_SIDE)),--side-by-side) $(MIX_ARGS)

## Codecs and levels (zlib, zlib-ng, ISA-L, brotli, zstd) on real 100-item product pages: µs/page and size.
COMPRESS_ARGS ?=
bench-compress: venv
	$(PY) -m loadtests.bench_compress --products $(LOAD_PRODUCTS) $(COMPRESS_ARGS)

## Cold per-request latency on a large catalog, cache off, one process: p50/p99 (client, and the server's app/db
## split) of each list filter/sort, a deep page (offset 100,000), categories, a search and varied filters;
## with no URL a throw-away service is seeded (1M products: minutes) and its time to ready, index build and
## RSS are printed too.
SCALE_PRODUCTS ?= 1000000
SCALE_ARGS ?=
bench-scale: venv
	$(PY) -m loadtests.bench_scale --products $(SCALE_PRODUCTS) $(if $(URL),--url $(URL)) $(SCALE_ARGS)

## Freshness: 100 commits, time until every process serves each one (p50/p99/max; exit 1 if targets missed).
freshness: venv
	$(PY) -m loadtests.freshness --processes $(LOAD_PROCESSES)

## What a stalled Redis (SIGSTOP) adds to a request: prints each phase; exit 1 above 120 ms.
redis-stall: venv
	$(PY) -m loadtests.redis_stall

## Fault drill: shoppers browse while Redis is killed for 5 s and PostgreSQL restarts (exit 1 on any 500).
##   make fault-drill [DRILL_ARGS="--duration 30 --clients 16 --redis-fault stop"]
DRILL_ARGS ?=
.PHONY: fault-drill
fault-drill: venv
	$(PY) -m loadtests.fault_drill --processes $(LOAD_PROCESSES) --products $(LOAD_PRODUCTS) $(DRILL_ARGS)

## Full Zoho sync of SYNC_ITEMS items from the fake Zoho (own process): duration and the sync's peak RSS.
bench-sync: venv
	$(PY) -m loadtests.bench_sync --items $${SYNC_ITEMS:-50000} --images $${SYNC_IMAGES:-500}

## The fake Zoho with SYNC_ITEMS items, then one full sync of the demo database (`make run`'s) from it.
sync-demo: venv
	$(PY) -m loadtests.sync_demo --items $${SYNC_ITEMS:-2000} --port $${ZOHO_FAKE_PORT:-8765}

## Catalog p50/p99 under wrk with and without a full sync running in the service (needs DATABASE_URL).
sync-load: venv
	$(PY) -m loadtests.bench_sync_load --items $${SYNC_ITEMS:-20000} $${SYNC_LOAD_ARGS:-}

## `make load`'s catalog p99 alone and while 200 sign-ins are kept in flight, alternating (goal: within 20 %).
bench-logins: venv
	$(PY) -m loadtests.bench_logins --products $(LOAD_PRODUCTS) --processes $(LOAD_PROCESSES) \
		$(foreach e,$(SERVICE_ENV),--service-env $(e)) $(if $(URL),--url $(URL)) $${LOGINS_ARGS:-}

## Orders: the issue's table at full size (200 orders for stock 50; 1,000 multi-line orders: deadlocks and
## oversold; one key 10 times; placement orders/s and p99 with wrk, 2 processes; history p99 over 1,000
## orders). A scratch database on BENCH_ADMIN_URL's PostgreSQL (default postgresql://postgres@127.0.0.1:5432/
## postgres), created and dropped. BENCH_ORDERS_ARGS="--duration 10s --connections 32 --redis-url URL".
BENCH_ORDERS_ARGS ?=
.PHONY: bench-orders
bench-orders: venv
	$(PY) -m loadtests.bench_orders $(BENCH_ORDERS_ARGS)

## Locust with ordering shoppers only (sign up, browse, order with Idempotency-Keys, retries, history,
## cancel) and the SLO gate; a throw-away service unless URL (then add LOCUST_ARGS="--mail-dir DIR").
.PHONY: load-orders
load-orders: venv
	$(PY) -m loadtests.run_load $(if $(URL),--url $(URL)) --products $(LOAD_PRODUCTS) \
		--processes $(LOAD_PROCESSES) $(foreach e,$(SERVICE_ENV),--service-env $(e)) \
		--thresholds $(or $(THRESHOLDS),loadtests/thresholds_orders.toml) \
		--users $(USERS) --duration $(DURATION) -- --orders-weight 4 --shopper-weight 0 \
		--returning-weight 0 --herd-weight 0 --greedy-users 0 $(LOCUST_ARGS)

## Metrics and trace context on vs off (warm products page, same run), per-observation costs, and /metrics
## counting exactly the requests sent: `make bench-metrics [METRICS_ARGS="-d 5s --passes 5 --exact 3000"]`.
METRICS_ARGS ?=
.PHONY: bench-metrics
bench-metrics: venv
	$(PY) -m loadtests.bench_metrics $(METRICS_ARGS)
