# tests/coverage.mk - `make coverage`: how much of lib/ the Check suites run,
# included by the top-level Makefile.
#
#   make coverage                 build with --coverage into build/coverage,
#                                 run every Check program (and the README
#                                 example), then print each lib/ file's line
#                                 and branch coverage (gcov) and the totals;
#                                 lcov's HTML report goes to
#                                 build/coverage/html when lcov is installed
#   make coverage COVERAGE_MIN=98/90
#                                 also fail if lib/ as a whole is below 98%
#                                 of lines or 90% of branches taken
#
# Branch figures are gcov's "taken at least once".  Lines that no test can
# reach are listed in doc/testing.md with the reason.

COV_OUT := build/coverage
COVERAGE_MIN ?=
GCOV ?= gcov

.PHONY: coverage

coverage: | deps-check
	@rm -rf $(COV_OUT)
	@$(MAKE) --no-print-directory OUT=$(COV_OUT) CFLAGS="-O0 -g --coverage" SAN= \
	  $(TEST_SRC:tests/%.c=$(COV_OUT)/tests/%) $(COV_OUT)/readme_example >/dev/null
	@$(COV_OUT)/readme_example >/dev/null
	@for t in $(TEST_SRC:tests/%.c=$(COV_OUT)/tests/%); do \
	  $$t >$(COV_OUT)/$$(basename $$t).log 2>&1 || { echo "$$t failed (see $(COV_OUT))"; exit 1; }; \
	done
	@cd $(COV_OUT)/lib && $(GCOV) -b -n $(notdir $(LIB_OBJ:.o=.gcda)) 2>/dev/null | \
	  awk -v min="$(COVERAGE_MIN)" -f $(CURDIR)/tests/coverage.awk
	@if command -v lcov >/dev/null 2>&1 && command -v genhtml >/dev/null 2>&1; then \
	  lcov --quiet --capture --rc lcov_branch_coverage=1 --directory $(COV_OUT)/lib \
	    --output-file $(COV_OUT)/lib.info >/dev/null 2>&1 && \
	  genhtml --quiet --branch-coverage --output-directory $(COV_OUT)/html \
	    $(COV_OUT)/lib.info >/dev/null 2>&1 && \
	  echo "coverage: HTML report in $(COV_OUT)/html/index.html"; \
	else echo "coverage: install lcov for an HTML report (apt-get install lcov)"; fi
