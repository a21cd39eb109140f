# tests/reliability.mk - the reliability evidence of issue 6, included by
# the top-level Makefile:
#
#   make fuzz            libFuzzer on the model interpreter (FUZZ_SECONDS, 60)
#   make soak            threads + reclamation for SOAK_SECONDS (600)
#   make check-valgrind  memcheck over the Check programs (CK_FORK=no):
#                        no errors, no leaks
#   make lint            cppcheck and clang-tidy (.clang-tidy) on lib/ and lib/event/
#
# check_model, check_hostile, check_errors and check_oom are ordinary
# tests/check_*.c programs, built and run by `make check` (and check-asan,
# check-tsan) like every other.

FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 600
FUZZ_CC ?= clang
VALGRIND ?= valgrind
CPPCHECK ?= cppcheck
CLANG_TIDY ?= clang-tidy

.PHONY: fuzz soak check-valgrind lint

# check_model.c #includes the interpreter: rebuild it when that changes.
$(OUT)/tests/check_model: tests/model/model.c tests/model/model.h

# ---------------------------------------------------------------------------
# Fuzzing: the library's sources and the interpreter built together with
# coverage and ASan+UBSan.  The writable corpus lives in build/fuzz/corpus;
# tests/fuzz/corpus (short clean runs) seeds it.  tests/fuzz/regressions
# (inputs that once broke the library) is replayed by check_model instead:
# as a seed, one still failing would stop the fuzzer before it starts.
# A crash is written to
# build/fuzz/artifacts/: replay it with
#   MEMQ_MODEL_INPUT=<file> MEMQ_MODEL_TRACE=1 CK_FORK=no build/tests/check_model
# and keep it in tests/fuzz/regressions/ under a name saying what it broke.
# ---------------------------------------------------------------------------
FUZZ_OUT := build/fuzz
FUZZ_FLAGS := $(BASE) -Ilib -g -O1 $(WARN) -Wno-conversion \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer

$(FUZZ_OUT)/fuzz_model: tests/fuzz/fuzz_model.c tests/model/model.c tests/model/model.h \
                        $(LIB_SRC) $(LIB_HDR) | deps-lib
	$(call need,command -v $(FUZZ_CC),clang)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) tests/fuzz/fuzz_model.c $(LIB_SRC) -o $@

fuzz: $(FUZZ_OUT)/fuzz_model
	@mkdir -p $(FUZZ_OUT)/corpus $(FUZZ_OUT)/artifacts
	$(FUZZ_OUT)/fuzz_model -max_total_time=$(FUZZ_SECONDS) -timeout=30 -rss_limit_mb=2048 \
	  -print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/artifacts/ \
	  $(FUZZ_OUT)/corpus tests/fuzz/corpus

# ---------------------------------------------------------------------------
# Soak
# ---------------------------------------------------------------------------
$(OUT)/tests/soak: tests/soak.c $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Wno-conversion $< -o $@ $(STATIC) -lm

soak: $(OUT)/tests/soak
	$(OUT)/tests/soak $(SOAK_SECONDS)

# ---------------------------------------------------------------------------
# Valgrind: its own build without sanitizers; every Check program in one
# process (CK_FORK=no) so that leaks are seen; the model runs 24 seeds
# instead of 100 (memcheck is some 30 times slower).
# ---------------------------------------------------------------------------
VALGRIND_OUT := build/valgrind
# Each program's limit, in seconds: one that hangs fails with its name.
VALGRIND_TIMEOUT ?= 900
# somalloc=nouserintercepts: leave check_oom's own malloc in place (it
# forwards to the real one, which memcheck replaces as usual).
VALGRIND_FLAGS := --tool=memcheck --error-exitcode=99 --leak-check=full \
  --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
  --soname-synonyms=somalloc=nouserintercepts --track-fds=no --quiet

check-valgrind:
	$(call need,command -v $(VALGRIND),valgrind)
	@$(MAKE) --no-print-directory OUT=$(VALGRIND_OUT) CFLAGS="-O1 -g" SAN= \
	  $(TEST_SRC:tests/%.c=$(VALGRIND_OUT)/tests/%)
	@failed=0; for t in $(TEST_SRC:tests/%.c=$(VALGRIND_OUT)/tests/%); do \
	  echo "== valgrind $$t ($$(date +%T))"; \
	  CK_FORK=no CK_DEFAULT_TIMEOUT=600 MEMQ_MODEL_SEEDS=1:24 MEMQ_VALGRIND=1 \
	    timeout -k 10 $(VALGRIND_TIMEOUT) $(VALGRIND) $(VALGRIND_FLAGS) $$t || \
	    { rc=$$?; echo "$$t: exit status $$rc$$([ $$rc = 124 ] && echo ', timed out')"; \
	      failed=$$((failed+1)); }; \
	done; \
	echo "valgrind: $(words $(TEST_SRC)) programs, failed: $$failed"; \
	test $$failed = 0

# ---------------------------------------------------------------------------
# Lint: no findings on lib/ and lib/event/.  Each suppression says why.
#  - missingIncludeSystem: cppcheck is not given the system headers.
# Style-only checks (variable scope, const parameters) are not gated.
# ---------------------------------------------------------------------------
CPPCHECK_FLAGS := --std=c11 --enable=warning,performance,portability --error-exitcode=1 \
  --inline-suppr --quiet -Iinclude -Ilib -D_GNU_SOURCE -DMEMQ_BUILDING \
  --suppress=missingIncludeSystem

lint:
	$(call need,command -v $(CPPCHECK),cppcheck)
	$(call need,command -v $(CLANG_TIDY),clang-tidy)
	$(CPPCHECK) $(CPPCHECK_FLAGS) $(LIB_SRC) $(wildcard lib/event/*.c)
	$(CLANG_TIDY) --quiet $(LIB_SRC) $(wildcard lib/event/*.c) -- $(BASE) -Ilib -DMEMQ_BUILDING \
	  $(shell pkg-config --cflags libevent 2>/dev/null)
