# examples/examples.mk - the examples and the demonstration; included by the
# top-level Makefile.
#
#   make examples                  relayd, httpd, loadgen, examples/*_example.c
#   make demo                      relayd and httpd under memory and connection
#                                  attacks, with and without their defences,
#                                  with wrk and slowhttptest (about 1.5 min;
#                                  installs wrk, slowhttptest, gnuplot-nox)
#   make demo ALLOCATOR=jemalloc   the same with Debian's libjemalloc2
#   make demo ALLOCATOR=mimalloc   ... or libmimalloc2.0 preloaded
#   make demo POOL=off             relayd with --no-pool: responses in
#                                  libevent's malloc'd chains instead of the
#                                  chunk pool (the default, POOL=on), to
#                                  compare; combines with ALLOCATOR
#                                  (output in build/demo[-ALLOCATOR][-nopool])
#   make demo-allocators           doc/allocators.md's table and chart: 5
#                                  quota runs of relayd for each allocator,
#                                  with and without the pool (about 6 min;
#                                  tests/demo/allocators.sh, build/allocators)
#   make check-demo                (part of make check) every
#                                  examples/*_example.c, then a short demo
#                                  and checks of httpd and relayd whose
#                                  results are asserted (about 25 s)
#
# relayd and httpd are built on libmemquota-event, which lib/event/event.mk
# builds only when libevent was found when make started: demo and
# check-demo install libevent first (deps-demo), then run make again so
# that the library's rules exist.

EX_OUT := $(OUT)/examples
EX_DEMO_OUT := $(OUT)/demo
EVENT_CFLAGS = $(shell pkg-config --cflags libevent)
EVENT_LIBS = $(shell pkg-config --libs libevent)
EX_HDR := include/memquota.h $(wildcard include/memquota/*.h) examples/example_util.h

EXAMPLE_SRC := $(wildcard examples/*_example.c)
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(EX_OUT)/%)

ALLOCATOR ?= glibc
POOL ?= on

.PHONY: examples check-demo check-demo-run demo-run deps-allocator deps-demo-tools \
        demo-allocators demo-allocators-run

examples: $(EX_OUT)/relayd $(EX_OUT)/httpd $(EX_OUT)/loadgen $(EXAMPLE_BIN)

# relayd and httpd are built on libmemquota-event (lib/event/event.mk builds
# it; its variables are defined after this file is read, hence our own name).
EX_EVENT_STATIC := $(LIBOUT)/libmemquota-event.a

$(EX_OUT)/relayd: examples/relayd.c $(EX_HDR) $(EX_EVENT_STATIC) $(STATIC) | deps-demo
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(EVENT_CFLAGS) $< -o $@ $(EX_EVENT_STATIC) $(STATIC) $(EVENT_LIBS)

$(EX_OUT)/httpd: examples/httpd.c $(EX_HDR) $(EX_EVENT_STATIC) $(STATIC) | deps-demo
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(EVENT_CFLAGS) $< -o $@ $(EX_EVENT_STATIC) $(STATIC) $(EVENT_LIBS)

$(EX_OUT)/loadgen: examples/loadgen.c $(EX_HDR) $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(STATIC) -lm

# Standalone examples: one file each, the library only.
$(EX_OUT)/%_example: examples/%_example.c $(EX_HDR) $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(STATIC)

# An allocator other than glibc's is preloaded into relayd; install it first.
deps-allocator:
ifeq ($(ALLOCATOR),jemalloc)
	$(call need,sh -c 'ldconfig -p | grep -q libjemalloc.so.2',libjemalloc2)
else ifeq ($(ALLOCATOR),mimalloc)
	$(call need,sh -c 'ldconfig -p | grep -q libmimalloc.so.2',libmimalloc2.0)
else ifneq ($(ALLOCATOR),glibc)
	@echo "ALLOCATOR must be glibc, jemalloc or mimalloc"; exit 1
endif

# The tools of the HTTP runs: the honest load, the attacker, the chart.
deps-demo-tools:
	$(call need,command -v wrk,wrk)
	$(call need,command -v slowhttptest,slowhttptest)
	$(call need,command -v gnuplot,gnuplot-nox)

demo: deps-demo deps-demo-tools deps-allocator
	@$(MAKE) --no-print-directory demo-run

demo-run: $(EX_OUT)/relayd $(EX_OUT)/httpd $(EX_OUT)/loadgen
	@case "$(POOL)" in on|off) ;; *) echo "POOL must be on or off"; exit 1 ;; esac
	@examples/demo.sh --bin $(EX_OUT) \
	  --out $(EX_DEMO_OUT)$(if $(filter-out glibc,$(ALLOCATOR)),-$(ALLOCATOR))$(if $(filter off,$(POOL)),-nopool) \
	  --allocator $(ALLOCATOR) --pool $(POOL)

# Every allocator, with and without the pool: doc/allocators.md's figures.
demo-allocators: deps-demo
	$(call need,sh -c 'ldconfig -p | grep -q libjemalloc.so.2',libjemalloc2)
	$(call need,sh -c 'ldconfig -p | grep -q libmimalloc.so.2',libmimalloc2.0)
	$(call need,command -v gnuplot,gnuplot-nox)
	@$(MAKE) --no-print-directory demo-allocators-run

demo-allocators-run: $(EX_OUT)/relayd $(EX_OUT)/loadgen
	@tests/demo/allocators.sh --bin $(EX_OUT) --out $(OUT)/allocators

check-demo: deps-demo
	@$(MAKE) --no-print-directory check-demo-run

check-demo-run: $(EX_OUT)/relayd $(EX_OUT)/httpd $(EX_OUT)/loadgen $(EXAMPLE_BIN)
	@for x in $(EXAMPLE_BIN); do \
	  echo "== $$x"; $$x >/dev/null || { echo "$$x failed"; exit 1; }; \
	done
	@tests/demo/check_demo.sh --bin $(EX_OUT) --out $(EX_DEMO_OUT)-check $(CHECK_DEMO_LOAD)

CHECK_EXTRA += check-demo
# Under a sanitizer relayd runs several times slower: with the full short
# load it can no longer drain honest clients' buffers, whose data then ages
# like an attacker's (oldest-first assumes a server that keeps up).  A
# lighter load still crosses the quota and checks the same properties.
CHECK_DEMO_LOAD := $(if $(strip $(SAN)),--honest 4 --attackers 8)
