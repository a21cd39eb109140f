# tests/coverage.mk - `make coverage`: how much of lib/ the Check suites run,
# included by the top-level Makefile.
#
#   make coverage                 build with --coverage into build/coverage,
#                                 run every Check program (the core's,
#                                 libmemquota-event's when libevent is found,
#                                 the README example), then print each lib/
#                                 and lib/event/ file's line and branch
#                                 coverage (gcov), the total of lib/ and
#                                 that of lib/event/; lcov's HTML report
#                                 goes to build/coverage/html when lcov is
#                                 installed
#   make coverage COVERAGE_MIN=98/90
#                                 also fail if lib/ as a whole (every
#                                 lib/*.c and the inline functions of
#                                 lib/*.h; not lib/event/) is below 98% of
#                                 lines or 90% of branches taken, unrounded
#                                 (tests/coverage.awk; "98" alone checks
#                                 lines only)
#
# Branch figures are gcov's "taken at least once".  The lines no test
# reaches are listed, each with the reason, in doc/design.md, section
# "Lines no test reaches".

COV_OUT := build/coverage
COVERAGE_MIN ?=
GCOV ?= gcov

.PHONY: coverage

# libmemquota-event (lib/event/) is covered too when libevent is found: its
# files and its own total, which COVERAGE_MIN does not check.
COV_EVENT_BIN = $(if $(filter yes,$(EVENT_FOUND)),$(EVENT_TEST_SRC:tests/event/%.c=$(COV_OUT)/tests/event/%))
COV_EVENT_GCDA = $(if $(filter yes,$(EVENT_FOUND)),$(notdir $(EVENT_SRC:.c=.gcda)))

coverage: | deps-check
	@rm -rf $(COV_OUT)
	@$(MAKE) --no-print-directory OUT=$(COV_OUT) CFLAGS="-O0 -g --coverage" SAN= \
	  $(TEST_SRC:tests/%.c=$(COV_OUT)/tests/%) $(COV_EVENT_BIN) $(COV_OUT)/readme_example >/dev/null
	@$(COV_OUT)/readme_example >/dev/null
	@for t in $(TEST_SRC:tests/%.c=$(COV_OUT)/tests/%) $(COV_EVENT_BIN); do \
	  $$t >$(COV_OUT)/$$(basename $$t).log 2>&1 || { echo "$$t failed (see $(COV_OUT))"; exit 1; }; \
	done
	@cd $(COV_OUT)/lib && \
	  $(GCOV) -b -n $(notdir $(LIB_OBJ:.o=.gcda)) 2>/dev/null | \
	    awk -v min="$(COVERAGE_MIN)" -f $(CURDIR)/tests/coverage.awk; rc=$$?; \
	  if [ -n "$(COV_EVENT_GCDA)" ]; then \
	    cd event && $(GCOV) -b -n $(COV_EVENT_GCDA) 2>/dev/null | \
	      awk -f $(CURDIR)/tests/coverage.awk | \
	      sed 's|^coverage of lib/:|coverage of lib/event/:|'; \
	  fi; \
	  exit $$rc
	@if command -v lcov >/dev/null 2>&1 && command -v genhtml >/dev/null 2>&1; then \
	  lcov --quiet --capture --rc lcov_branch_coverage=1 --directory $(COV_OUT)/lib \
	    --output-file $(COV_OUT)/lib.info >/dev/null 2>&1 && \
	  genhtml --quiet --branch-coverage --output-directory $(COV_OUT)/html \
	    $(COV_OUT)/lib.info >/dev/null 2>&1 && \
	  echo "coverage: HTML report in $(COV_OUT)/html/index.html"; \
	else echo "coverage: install lcov for an HTML report (apt-get install lcov)"; fi
