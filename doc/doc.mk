# doc/doc.mk - the documentation's checks, included by the top-level
# Makefile (after it defines SHARED, CHECK_EXTRA and the `need` macro).
#
#   make check-man      every exported symbol has a man page in doc/man, and
#                       every page renders without a warning under
#                       `groff -man -ww -z`; part of `make check`
#   make check-install  install into a temporary DESTDIR, build a static and
#                       a dynamic program against that copy with pkg-config
#                       only, run them, and check that uninstall removes
#                       exactly what install added

CHECK_EXTRA += check-man

.PHONY: check-man check-install deps-man

deps-man:
	$(call need,command -v groff,groff-base)

# $(SHARED) is the variant's own library (lib/ or $(OUT)/), so the check
# also runs under check-asan and check-tsan against what they built.
check-man: $(SHARED) | deps-man
	@sh tests/check_manpages.sh $(SHARED) doc/man

check-install: | deps-lib
	@sh tests/install-test.sh
