# examples/examples.mk - the examples and the demonstration; included by the
# top-level Makefile.
#
#   make demo                      relayd under a sniper attack, with and
#                                  without a quota (about 25 s)
#   make demo ALLOCATOR=jemalloc   the same with Debian's libjemalloc2
#   make demo ALLOCATOR=mimalloc   ... or libmimalloc2.0 preloaded
#   make check-demo                (part of make check) every
#                                  examples/*_example.c, then a short demo
#                                  whose RESULT line is checked

EX_OUT := $(OUT)/examples
EX_DEMO_OUT := $(OUT)/demo
EVENT_CFLAGS = $(shell pkg-config --cflags libevent)
EVENT_LIBS = $(shell pkg-config --libs libevent)
EX_HDR := include/memquota.h $(wildcard include/memquota/*.h)

EXAMPLE_SRC := $(wildcard examples/*_example.c)
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(EX_OUT)/%)

ALLOCATOR ?= glibc

.PHONY: examples check-demo deps-allocator

examples: $(EX_OUT)/relayd $(EX_OUT)/loadgen $(EXAMPLE_BIN)

$(EX_OUT)/relayd: examples/relayd.c examples/evbuffer_track.c examples/evbuffer_track.h \
                  $(EX_HDR) $(STATIC) | deps-demo
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(EVENT_CFLAGS) examples/relayd.c examples/evbuffer_track.c \
	  -o $@ $(STATIC) $(EVENT_LIBS)

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

demo: $(EX_OUT)/relayd $(EX_OUT)/loadgen deps-allocator
	@examples/demo.sh --bin $(EX_OUT) --out $(EX_DEMO_OUT)$(if $(filter-out glibc,$(ALLOCATOR)),-$(ALLOCATOR)) \
	  --allocator $(ALLOCATOR)

check-demo: $(EX_OUT)/relayd $(EX_OUT)/loadgen $(EXAMPLE_BIN)
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
