# lib/event/event.mk - libmemquota-event, the libevent integration
# (include/memquota/event.h).  Included by the top-level Makefile after it
# defines OUT, LIBOUT, ALL_CFLAGS, VERSION, STATIC, SHARED, CHECK_EXTRA and
# the `need` macro.  Built when libevent is found (pkg-config libevent),
# skipped with a message otherwise.
#
#   make                    also builds lib/libmemquota-event.a and .so
#   make check-event        its Check programs, tests/event/check_*.c
#                           (part of make check, check-asan and check-tsan,
#                           in the variant's OUT with its SAN)
#   make install, uninstall also (un)install the library and
#                           memquota-event.pc (the header and man pages go
#                           with the core's include/memquota and doc/man)
#   make check-valgrind     also runs its programs under memcheck
#   make check-man          also checks the library's symbols (the script
#                           reads libmemquota-event.so beside libmemquota.so)
#
# The library is linked against libmemquota and libevent; its tests link
# the static libraries of the same variant, and libevent_pthreads (one
# test needs libevent's threading).

EVENT_FOUND := $(shell pkg-config --exists libevent 2>/dev/null && echo yes)
LIBEVENT_CFLAGS := $(shell pkg-config --cflags libevent 2>/dev/null)
LIBEVENT_LIBS := $(shell pkg-config --libs libevent 2>/dev/null)
LIBEVENT_PTHREADS_LIBS := $(shell pkg-config --libs libevent_pthreads 2>/dev/null)

EVENT_SONAME := libmemquota-event.so.$(VERSION_MAJOR)
EVENT_STATIC := $(LIBOUT)/libmemquota-event.a
EVENT_SHARED := $(LIBOUT)/libmemquota-event.so
EVENT_SRC := $(wildcard lib/event/*.c)
EVENT_OBJ := $(EVENT_SRC:lib/event/%.c=$(OUT)/lib/event/%.o)
EVENT_HDR := include/memquota.h $(wildcard include/memquota/*.h) $(wildcard lib/event/*.h)
EVENT_TEST_SRC := $(wildcard tests/event/check_*.c)
EVENT_TEST_BIN := $(EVENT_TEST_SRC:tests/event/%.c=$(OUT)/tests/event/%)
EVENT_TEST_HDR := $(wildcard tests/event/*.h) tests/interpose.h
EVENT_SKIPPED := libmemquota-event: skipped, libevent not found (apt-get install libevent-dev pkg-config)

.PHONY: event check-event install-event uninstall-event clean-event check-valgrind-event

CHECK_EXTRA += check-event
install: install-event
uninstall: uninstall-event
clean: clean-event
check-valgrind: check-valgrind-event

ifeq ($(EVENT_FOUND),yes)

all: $(EVENT_STATIC) $(EVENT_SHARED)
event: $(EVENT_STATIC) $(EVENT_SHARED)
check-man: $(EVENT_SHARED)

# A shorter stem than the core's $(OUT)/lib/%.o, so this rule wins.
$(OUT)/lib/event/%.o: lib/event/%.c $(EVENT_HDR) | deps-lib
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LIBEVENT_CFLAGS) -fPIC -fvisibility=hidden -DMEMQ_BUILDING -c $< -o $@

$(EVENT_STATIC): $(EVENT_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(EVENT_SHARED): $(EVENT_OBJ) $(SHARED)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,$(EVENT_SONAME) \
	  -o $@.$(VERSION) $(EVENT_OBJ) -L$(LIBOUT) -lmemquota $(LIBEVENT_LIBS)
	ln -sf libmemquota-event.so.$(VERSION) $(LIBOUT)/$(EVENT_SONAME)
	ln -sf $(EVENT_SONAME) $@

$(OUT)/tests/event/%: tests/event/%.c $(EVENT_TEST_HDR) $(EVENT_STATIC) $(STATIC) | deps-check
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Wno-conversion $(LIBEVENT_CFLAGS) $(CHECK_CFLAGS) $< -o $@ \
	  $(EVENT_STATIC) $(STATIC) $(LIBEVENT_PTHREADS_LIBS) $(LIBEVENT_LIBS) $(CHECK_LIBS) -lm

check-event: $(EVENT_TEST_BIN)
	@failed=0; for t in $(EVENT_TEST_BIN); do \
	  echo "== $$t"; $$t || failed=$$((failed+1)); \
	done; \
	echo "libmemquota-event test programs: $(words $(EVENT_TEST_BIN)), failed: $$failed"; \
	test $$failed = 0

install-event: $(EVENT_STATIC) $(EVENT_SHARED)
	install -d $(DESTDIR)$(LIBDIR_INSTALL) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(EVENT_STATIC) $(DESTDIR)$(LIBDIR_INSTALL)/
	install -m 755 $(EVENT_SHARED).$(VERSION) $(DESTDIR)$(LIBDIR_INSTALL)/
	ln -sf libmemquota-event.so.$(VERSION) $(DESTDIR)$(LIBDIR_INSTALL)/$(EVENT_SONAME)
	ln -sf $(EVENT_SONAME) $(DESTDIR)$(LIBDIR_INSTALL)/libmemquota-event.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR_INSTALL)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    memquota-event.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/memquota-event.pc

# Valgrind: the same build and flags as tests/reliability.mk's
# check-valgrind, which runs after this.
VALGRIND ?= valgrind
VALGRIND_OUT ?= build/valgrind
VALGRIND_FLAGS ?= --tool=memcheck --error-exitcode=99 --leak-check=full \
  --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
  --track-fds=no --quiet
VALGRIND_TIMEOUT ?= 900
EVENT_VALGRIND_BIN := $(EVENT_TEST_SRC:tests/event/%.c=$(VALGRIND_OUT)/tests/event/%)

check-valgrind-event:
	$(call need,command -v $(VALGRIND),valgrind)
	@$(MAKE) --no-print-directory OUT=$(VALGRIND_OUT) CFLAGS="-O1 -g" SAN= $(EVENT_VALGRIND_BIN)
	@failed=0; for t in $(EVENT_VALGRIND_BIN); do \
	  echo "== valgrind $$t ($$(date +%T))"; \
	  CK_FORK=no CK_DEFAULT_TIMEOUT=600 MEMQ_VALGRIND=1 \
	    timeout -k 10 $(VALGRIND_TIMEOUT) $(VALGRIND) $(VALGRIND_FLAGS) $$t || \
	    { rc=$$?; echo "$$t: exit status $$rc$$([ $$rc = 124 ] && echo ', timed out')"; \
	      failed=$$((failed+1)); }; \
	done; \
	echo "valgrind, libmemquota-event: $(words $(EVENT_VALGRIND_BIN)) programs, failed: $$failed"; \
	test $$failed = 0

else

event check-event install-event check-valgrind-event:
	@echo "$(EVENT_SKIPPED)"

endif

# Whatever was found, remove what an install with libevent would add.
uninstall-event:
	rm -f $(DESTDIR)$(LIBDIR_INSTALL)/libmemquota-event.a \
	      $(DESTDIR)$(LIBDIR_INSTALL)/libmemquota-event.so \
	      $(DESTDIR)$(LIBDIR_INSTALL)/$(EVENT_SONAME) \
	      $(DESTDIR)$(LIBDIR_INSTALL)/libmemquota-event.so.$(VERSION) \
	      $(DESTDIR)$(PKGCONFIGDIR)/memquota-event.pc

clean-event:
	rm -f lib/libmemquota-event.a lib/libmemquota-event.so*
