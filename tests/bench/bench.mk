# tests/bench/bench.mk - `make bench`: what accounting costs, against the
# baselines a daemon author would pick (issue 5), then what the chunk pool
# costs against malloc and the memory it holds against the allocators'
# (pool_bench, issue 11).  Included by the top Makefile.
#
#   make bench            about 3 minutes on a 2-core machine
#   make bench QUICK=1    about 30 seconds
#   tests/bench/report.sh regenerates doc/performance.md from a run
#
# The benchmark is built with the library's own flags and linked against
# the shared library, as a user's program is.  Its baseline plain counter
# is a separate shared object built with the same flags, so both sides
# pay the same call.  A missed target is a measurement, not a failure: the
# target fails only if the benchmark itself breaks.

BENCH_DIR := $(OUT)/bench
BENCH_BIN := $(BENCH_DIR)/memq_bench
POOL_BENCH_BIN := $(BENCH_DIR)/pool_bench
BENCH_BASE := $(BENCH_DIR)/libmemq_bench_base.so
BENCH_RPATH := -Wl,-rpath,$(abspath $(BENCH_DIR)):$(abspath $(LIBOUT))

$(BENCH_BASE): tests/bench/baseline.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fPIC -fvisibility=hidden -shared -o $@ $<

$(BENCH_BIN): tests/bench/bench.c tests/bench/bench_util.h $(BENCH_BASE) $(SHARED) include/memquota.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< -o $@ -L$(BENCH_DIR) -lmemq_bench_base -L$(LIBOUT) -lmemquota \
	  $(BENCH_RPATH)

$(POOL_BENCH_BIN): tests/bench/pool_bench.c tests/bench/bench_util.h $(SHARED) include/memquota.h include/memquota/pool.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< -o $@ -L$(LIBOUT) -lmemquota $(BENCH_RPATH)

.PHONY: bench-build
bench-build: $(BENCH_BIN) $(POOL_BENCH_BIN)

bench: $(BENCH_BIN) $(POOL_BENCH_BIN)
	$(BENCH_BIN)$(if $(filter-out 0,$(QUICK)), --quick)
	$(POOL_BENCH_BIN)$(if $(filter-out 0,$(QUICK)), --quick)

# `make check` keeps the benchmark compiling (it does not run it).
CHECK_EXTRA += bench-build

# The flags the benchmark and the library are built with (for report.sh).
.PHONY: bench-flags
bench-flags:
	@echo $(CC) $(ALL_CFLAGS)
