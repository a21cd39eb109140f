# libmemquota - plain GNU make.  `make help` lists the targets.

VERSION_MAJOR := $(shell sed -n 's/^\#define MEMQ_VERSION_MAJOR \([0-9]*\)/\1/p' include/memquota.h)
VERSION_MINOR := $(shell sed -n 's/^\#define MEMQ_VERSION_MINOR \([0-9]*\)/\1/p' include/memquota.h)
VERSION_PATCH := $(shell sed -n 's/^\#define MEMQ_VERSION_PATCH \([0-9]*\)/\1/p' include/memquota.h)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
SONAME := libmemquota.so.$(VERSION_MAJOR)

CC ?= cc
CFLAGS ?= -O2 -g
PREFIX ?= /usr/local
LIBDIR_INSTALL ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR_INSTALL)/pkgconfig

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wconversion -Wno-sign-conversion -Werror
BASE := -std=c11 -D_GNU_SOURCE -pthread -Iinclude
# Variant builds (sanitizers) set OUT and SAN; the plain build puts its
# libraries in lib/ as users expect.
OUT ?= build
SAN ?=
LIBOUT := $(if $(filter build,$(OUT)),lib,$(OUT))
ALL_CFLAGS := $(BASE) $(WARN) $(CFLAGS) $(SAN)

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:lib/%.c=$(OUT)/lib/%.o)
LIB_HDR := include/memquota.h $(wildcard include/memquota/*.h) $(wildcard lib/*.h)
STATIC := $(LIBOUT)/libmemquota.a
SHARED := $(LIBOUT)/libmemquota.so

TEST_SRC := $(wildcard tests/check_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(OUT)/tests/%)
TEST_HDR := $(wildcard tests/*.h)
MAN_PAGES := $(wildcard doc/man/*.3)

.PHONY: all help check check-asan check-tsan install uninstall clean demo bench \
        deps-lib deps-check deps-demo readme-example
all: $(STATIC) $(SHARED)

help:
	@echo "make            build lib/libmemquota.a and lib/libmemquota.so"
	@echo "make check      run the test suite (also check-asan, check-tsan)"
	@echo "make demo       build and run the demonstration"
	@echo "make install    install (PREFIX=$(PREFIX), DESTDIR=...)"

# ---------------------------------------------------------------------------
# Build dependencies: installed with apt-get when we are root, else the exact
# command to run is printed.
# ---------------------------------------------------------------------------
define need
@if ! $(1) >/dev/null 2>&1; then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
    echo "make: installing $(2)"; \
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2)) >/dev/null || exit 1; \
  else \
    echo "make: missing build dependency; run:  sudo apt-get install $(2)"; exit 1; \
  fi; \
fi
endef

# The library itself needs libc and pthreads only.
deps-lib:
deps-check: deps-lib
	$(call need,pkg-config --exists check,check pkg-config)
deps-demo: deps-lib
	$(call need,pkg-config --exists libevent,libevent-dev pkg-config)

# ---------------------------------------------------------------------------
# The library
# ---------------------------------------------------------------------------
$(OUT)/lib/%.o: lib/%.c $(LIB_HDR) | deps-lib
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fPIC -fvisibility=hidden -DMEMQ_BUILDING -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(SHARED): $(LIB_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,$(SONAME) -o $@.$(VERSION) $^
	ln -sf libmemquota.so.$(VERSION) $(LIBOUT)/$(SONAME)
	ln -sf $(SONAME) $@

# ---------------------------------------------------------------------------
# Tests: every tests/check_*.c is one Check program, linked statically so it
# may also test internal functions declared in lib/*.h.
# ---------------------------------------------------------------------------
CHECK_LIBS = $(shell pkg-config --libs check)
CHECK_CFLAGS = $(shell pkg-config --cflags check)

$(OUT)/tests/%: tests/%.c $(TEST_HDR) $(STATIC) | deps-check
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Wno-conversion -Ilib $(CHECK_CFLAGS) $< -o $@ $(STATIC) $(CHECK_LIBS) -lm

# The README's example is extracted and compiled, so it cannot rot.
$(OUT)/readme_example.c: README.md
	@mkdir -p $(@D)
	awk '/^```c readme-example/{on=1;next} /^```/{on=0} on' $< > $@
	@test -s $@ || { echo "README.md has no readme-example block"; exit 1; }
$(OUT)/readme_example: $(OUT)/readme_example.c $(STATIC)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(STATIC)

check: $(TEST_BIN) $(OUT)/readme_example
	@printf 'README example: '; $(OUT)/readme_example
	@failed=0; for t in $(TEST_BIN); do \
	  echo "== $$t"; $$t || failed=$$((failed+1)); \
	done; \
	echo "test programs: $(words $(TEST_BIN)), failed: $$failed"; \
	test $$failed = 0
	@for x in $(CHECK_EXTRA); do $(MAKE) --no-print-directory $$x OUT=$(OUT) SAN="$(SAN)" || exit 1; done

check-asan:
	$(MAKE) check OUT=build/asan CC=$(CC) \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
check-tsan:
	$(MAKE) check OUT=build/tsan CC=$(CC) SAN="-fsanitize=thread" CK_FORK=no

# ---------------------------------------------------------------------------
# Install
# ---------------------------------------------------------------------------
install: $(STATIC) $(SHARED)
	install -d $(DESTDIR)$(LIBDIR_INSTALL) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/memquota.h $(DESTDIR)$(INCLUDEDIR)/
	if [ -d include/memquota ]; then install -d $(DESTDIR)$(INCLUDEDIR)/memquota && \
	  install -m 644 include/memquota/*.h $(DESTDIR)$(INCLUDEDIR)/memquota/; fi
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR_INSTALL)/
	install -m 755 $(SHARED).$(VERSION) $(DESTDIR)$(LIBDIR_INSTALL)/
	ln -sf libmemquota.so.$(VERSION) $(DESTDIR)$(LIBDIR_INSTALL)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR_INSTALL)/libmemquota.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR_INSTALL)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    memquota.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/memquota.pc
	install -d $(DESTDIR)$(MANDIR)/man3
	install -m 644 $(MAN_PAGES) $(DESTDIR)$(MANDIR)/man3/

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/memquota.h $(DESTDIR)$(LIBDIR_INSTALL)/libmemquota.a \
	      $(DESTDIR)$(LIBDIR_INSTALL)/libmemquota.so $(DESTDIR)$(LIBDIR_INSTALL)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR_INSTALL)/libmemquota.so.$(VERSION) $(DESTDIR)$(PKGCONFIGDIR)/memquota.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/memquota
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man3/,$(notdir $(MAN_PAGES)))

# Fragments owned by the parts they build; each may add targets run by
# `make check` to CHECK_EXTRA.
CHECK_EXTRA :=
include $(wildcard examples/examples.mk tests/bench/bench.mk doc/doc.mk tests/reliability.mk \
                   tests/coverage.mk lib/event/event.mk)
ifeq ($(wildcard examples/examples.mk),)
demo:
	@echo "The demonstration daemon (examples/relayd) is not built yet; see issue 4."
endif

clean:
	rm -rf build lib/libmemquota.a lib/libmemquota.so*
