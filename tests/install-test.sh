#!/bin/sh
# install-test.sh - install into a temporary DESTDIR and use that copy as a
# user would.
#
#   tests/install-test.sh
#
# 1. `make install DESTDIR=$tmp PREFIX=/usr/local`, into a DESTDIR that
#    already holds another package's files in the same directories;
# 2. checks the files a user needs are there (headers, static and shared
#    libraries with their SONAME links, memquota.pc, one man page per page
#    of doc/man) and that no installed file mentions the DESTDIR;
# 3. builds two programs from a directory outside the source tree, using
#    only `pkg-config --cflags --libs memquota` (PKG_CONFIG_PATH and
#    PKG_CONFIG_SYSROOT_DIR pointing at the copy), one linked statically,
#    one dynamically, and runs both;
# 4. when libevent is found (pkg-config libevent), the same for
#    libmemquota-event: its libraries, SONAME and memquota-event.pc are
#    installed, and two programs built with `pkg-config --cflags --libs
#    memquota-event` only (libevent's own .pc found where the system keeps
#    it), one dynamic and one static, reclaim in a libevent loop;
# 5. `make uninstall` with the same DESTDIR must leave exactly the files
#    that were there before the install.
# Prints one line per problem and a closing "N passed, N failed" line;
# exits non-zero if anything failed.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
MAKE=${MAKE:-make}
CC=${CC:-cc}
prefix=/usr/local

for tool in pkg-config readelf "$CC"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-test: $tool not found" >&2
        exit 2
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/memquota-install.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT INT TERM
dest=$tmp/destdir
src=$tmp/src
mkdir -p "$dest" "$src"

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() { # check DESCRIPTION COMMAND...
    what=$1
    shift
    if "$@"; then pass; else fail "$what"; fi
}
finish() {
    echo "install test: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit $?
}
list_files() {
    (cd "$dest" && find . \( -type f -o -type l \) | sort)
}

# libmemquota-event is built and installed only where libevent is found;
# its .pc requires libevent's, which must stay visible once PKG_CONFIG_LIBDIR
# points at the installed copy.
event=no
if pkg-config --exists libevent 2>/dev/null; then
    event=yes
    libevent_pcdir=$(pkg-config --variable=pcfiledir libevent)
else
    echo "install-test: libevent not found, libmemquota-event not tested"
fi

version=$(sed -n 's/^#define MEMQ_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' include/memquota.h |
          paste -sd. -)
major=${version%%.*}

# Another package's files in every directory the install writes to: the
# uninstall must not touch them.
for dir in include lib lib/pkgconfig share/man/man3; do
    mkdir -p "$dest$prefix/$dir"
    echo "not ours" > "$dest$prefix/$dir/other-package.sentinel"
done
list_files > "$tmp/before"

# ---------------------------------------------------------------------------
# Install
# ---------------------------------------------------------------------------
if ! $MAKE install DESTDIR="$dest" PREFIX="$prefix" > "$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    fail "make install DESTDIR=$dest PREFIX=$prefix"
    finish
fi
pass
list_files > "$tmp/after"
comm -13 "$tmp/before" "$tmp/after" > "$tmp/installed"
gone=$(comm -23 "$tmp/before" "$tmp/after" | tr '\n' ' ')
check "install removed files it does not own: $gone" test -z "$gone"

p=$dest$prefix
check "installed: include/memquota.h" test -f "$p/include/memquota.h"
for h in include/memquota/*.h; do
    [ -f "$h" ] || continue
    check "installed: $h" cmp -s "$h" "$p/$h"
done
check "installed: lib/libmemquota.a" test -f "$p/lib/libmemquota.a"
check "installed: lib/libmemquota.so.$version" test -f "$p/lib/libmemquota.so.$version"
check "installed: lib/libmemquota.so.$major -> libmemquota.so.$version" \
    test "$(readlink "$p/lib/libmemquota.so.$major")" = "libmemquota.so.$version"
check "installed: lib/libmemquota.so -> libmemquota.so.$major" \
    test "$(readlink "$p/lib/libmemquota.so")" = "libmemquota.so.$major"
soname=$(readelf -d "$p/lib/libmemquota.so.$version" 2>/dev/null |
         sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
check "SONAME is libmemquota.so.$major (found '$soname')" test "$soname" = "libmemquota.so.$major"
check "installed: lib/pkgconfig/memquota.pc" test -f "$p/lib/pkgconfig/memquota.pc"
missing_man=""
for page in doc/man/*.3; do
    [ -f "$page" ] || continue
    cmp -s "$page" "$p/share/man/man3/$(basename "$page")" ||
        missing_man="$missing_man $(basename "$page")"
done
check "man pages not installed to share/man/man3:$missing_man" test -z "$missing_man"
leaks=$(cd "$dest" && grep -rlF "$dest" . 2>/dev/null)
check "installed files mention the DESTDIR: $leaks" test -z "$leaks"

# ---------------------------------------------------------------------------
# Build against the installed copy with pkg-config only
# ---------------------------------------------------------------------------
PKG_CONFIG_PATH=$p/lib/pkgconfig
PKG_CONFIG_LIBDIR=$p/lib/pkgconfig # no other memquota.pc can be found
PKG_CONFIG_SYSROOT_DIR=$dest
export PKG_CONFIG_PATH PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR

modversion=$(pkg-config --modversion memquota 2>&1)
check "pkg-config --modversion memquota: '$modversion', want '$version'" \
    test "$modversion" = "$version"
cflags=$(pkg-config --cflags memquota) || fail "pkg-config --cflags memquota"
libs=$(pkg-config --libs memquota) || fail "pkg-config --libs memquota"
static_libs=$(pkg-config --libs --static memquota) || fail "pkg-config --libs --static memquota"
echo "pkg-config: cflags '$cflags', libs '$libs', static libs '$static_libs'"

# The dynamic program: a participant, a claim over max, one reclamation.
cat > "$src/dynamic.c" <<'EOF'
#include <memquota.h>
#include <stdio.h>
#include <string.h>

struct conn { memq_participation *p; size_t queued; memq_time since; };

static bool oldest(void *self, memq_time *when)
{
    struct conn *c = self;
    *when = c->since;
    return c->queued > 0;
}

static memq_reclaim_status reclaim(void *self, const memq_reclaim_request *req)
{
    struct conn *c = self;
    (void)req;
    memq_release(c->p, c->queued);
    c->queued = 0;
    return MEMQ_RECLAIMED_COLLAPSING;
}

int main(void)
{
    static const memq_participant_ops ops = { oldest, reclaim };
    struct conn c = { NULL, 0, 0 };
    memq_tracker *t;
    memq_account *a;
    memq_config cfg;

    if (memq_version() != MEMQ_VERSION_NUMBER || strcmp(memq_version_string(), VERSION) != 0) {
        printf("version mismatch: %u %s\n", memq_version(), memq_version_string());
        return 1;
    }
    memq_config_init(&cfg);
    cfg.max = 1 << 20;
    if (memq_tracker_new(&t, &cfg) != 0 || memq_account_new(t, NULL, &a) != 0 ||
        memq_participant_register(a, &ops, &c, &c.p) != 0)
        return 1;
    c.since = memq_now();
    c.queued = 2 << 20;
    if (memq_claim(c.p, c.queued) != 0 || memq_tracker_reclaim(t) != 0)
        return 1;
    int ok = memq_account_closed(a) && memq_tracker_used(t) == 0;
    memq_participation_free(c.p);
    memq_account_unref(a);
    memq_tracker_free(t);
    printf("dynamic: libmemquota %s, reclaimed: %s\n", memq_version_string(), ok ? "yes" : "no");
    return ok ? 0 : 1;
}
EOF

# The static program: the tracked containers and a dump.
cat > "$src/static.c" <<'EOF'
#include <memquota.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    static char data[64 * 1024];
    memq_tracker *t;
    memq_account *stalled, *busy;
    memq_buf *buf;
    memq_queue *q;
    memq_config cfg;

    if (strcmp(memq_version_string(), VERSION) != 0)
        return 1;
    memq_config_init(&cfg);
    if (memq_parse_size("1 MiB", &cfg.max) != 0 || memq_tracker_new(&t, &cfg) != 0)
        return 1;
    if (memq_account_new(t, NULL, &stalled) != 0 || memq_account_new(t, NULL, &busy) != 0 ||
        memq_buf_new(stalled, NULL, NULL, &buf) != 0 ||
        memq_queue_new(busy, MEMQ_QUEUE_DROP_OLDEST, NULL, NULL, NULL, &q) != 0)
        return 1;
    for (int i = 0; i < 24; i++)          /* 1.5 MiB the reader never takes */
        if (memq_buf_add(buf, data, sizeof data) != 0)
            return 1;
    if (memq_queue_push(q, data, 1000) != 0)
        return 1;
    int rc;
    while ((rc = memq_tracker_reclaim(t)) == MEMQ_EAGAIN)
        ;
    int ok = rc == 0 && memq_buf_closed(buf) && !memq_queue_closed(q) &&
             memq_account_closed(stalled) && !memq_account_closed(busy);
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull == NULL || memq_tracker_dump(t, devnull, MEMQ_DUMP_PROMETHEUS) != 0)
        ok = 0;
    if (devnull != NULL)
        fclose(devnull);
    memq_buf_free(buf);
    memq_queue_free(q);
    memq_account_unref(stalled);
    memq_account_unref(busy);
    memq_tracker_free(t);
    printf("static: libmemquota %s, oldest reclaimed, newer kept: %s\n", memq_version_string(),
           ok ? "yes" : "no");
    return ok ? 0 : 1;
}
EOF

# shellcheck disable=SC2086 # the pkg-config output is meant to be split
if (cd "$src" && $CC -DVERSION="\"$version\"" dynamic.c -o dynamic $cflags $libs) \
       > "$tmp/dynamic.log" 2>&1; then
    pass
    check "dynamic: needs libmemquota.so.$major" \
        sh -c "readelf -d '$src/dynamic' | grep -q 'NEEDED.*\[libmemquota.so.$major\]'"
    resolved=$(LD_LIBRARY_PATH=$p/lib ldd "$src/dynamic" 2>&1 | awk '/libmemquota/ { print $3 }')
    check "dynamic: resolves libmemquota from the installed copy (got '$resolved')" \
        test "$resolved" = "$p/lib/libmemquota.so.$major"
    check "dynamic: runs" env LD_LIBRARY_PATH="$p/lib" "$src/dynamic"
else
    cat "$tmp/dynamic.log"
    fail "dynamic: $CC dynamic.c $cflags $libs"
fi

# shellcheck disable=SC2086
if (cd "$src" && $CC -static -DVERSION="\"$version\"" static.c -o static $cflags $static_libs) \
       > "$tmp/static.log" 2>&1; then
    pass
    check "static: needs no shared libmemquota" \
        sh -c "! readelf -d '$src/static' 2>/dev/null | grep -q 'NEEDED.*libmemquota'"
    check "static: runs" env -u LD_LIBRARY_PATH "$src/static"
else
    cat "$tmp/static.log"
    fail "static: $CC -static static.c $cflags $static_libs"
fi

# ---------------------------------------------------------------------------
# libmemquota-event: installed, and used through pkg-config only
# ---------------------------------------------------------------------------
if [ "$event" = yes ]; then
    check "installed: lib/libmemquota-event.a" test -f "$p/lib/libmemquota-event.a"
    check "installed: lib/libmemquota-event.so.$version" \
        test -f "$p/lib/libmemquota-event.so.$version"
    check "installed: lib/libmemquota-event.so.$major -> libmemquota-event.so.$version" \
        test "$(readlink "$p/lib/libmemquota-event.so.$major")" = "libmemquota-event.so.$version"
    check "installed: lib/libmemquota-event.so -> libmemquota-event.so.$major" \
        test "$(readlink "$p/lib/libmemquota-event.so")" = "libmemquota-event.so.$major"
    ev_soname=$(readelf -d "$p/lib/libmemquota-event.so.$version" 2>/dev/null |
                sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    check "SONAME is libmemquota-event.so.$major (found '$ev_soname')" \
        test "$ev_soname" = "libmemquota-event.so.$major"
    check "installed: include/memquota/event.h" test -f "$p/include/memquota/event.h"
    check "installed: lib/pkgconfig/memquota-event.pc" test -f "$p/lib/pkgconfig/memquota-event.pc"
    check "installed: share/man/man3/memq_event_attach.3" \
        test -f "$p/share/man/man3/memq_event_attach.3"

    ev_modversion=$(PKG_CONFIG_LIBDIR="$p/lib/pkgconfig:$libevent_pcdir" \
                    pkg-config --modversion memquota-event 2>&1)
    check "pkg-config --modversion memquota-event: '$ev_modversion', want '$version'" \
        test "$ev_modversion" = "$version"
    ev_cflags=$(PKG_CONFIG_LIBDIR="$p/lib/pkgconfig:$libevent_pcdir" \
                pkg-config --cflags memquota-event) || fail "pkg-config --cflags memquota-event"
    ev_libs=$(PKG_CONFIG_LIBDIR="$p/lib/pkgconfig:$libevent_pcdir" \
              pkg-config --libs memquota-event) || fail "pkg-config --libs memquota-event"
    ev_static_libs=$(PKG_CONFIG_LIBDIR="$p/lib/pkgconfig:$libevent_pcdir" \
                     pkg-config --libs --static memquota-event) ||
        fail "pkg-config --libs --static memquota-event"
    echo "pkg-config memquota-event: cflags '$ev_cflags', libs '$ev_libs'"

    # A tracker attached to a loop, a tracked evbuffer crossing max, an
    # evhttp defended: reclamation runs in the loop.
    cat > "$src/event.c" <<'EOF2'
#include <memquota/event.h>

#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    static char data[2 << 20];
    struct event_base *base = event_base_new();
    memq_config cfg;
    memq_tracker *t;
    memq_event *ev;
    memq_account *a;
    memq_evbuffer *b;
    memq_evhttp *mh;

    if (strcmp(memq_version_string(), VERSION) != 0 || base == NULL)
        return 1;
    memq_config_init(&cfg);
    cfg.max = 1 << 20;
    if (memq_tracker_new(&t, &cfg) != 0 || memq_event_attach(t, base, 0, &ev) != 0 ||
        memq_account_new(t, NULL, &a) != 0 || memq_evbuffer_new(a, NULL, NULL, &b) != 0)
        return 1;
    struct evhttp *http = evhttp_new(base);
    if (http == NULL || memq_evhttp_new(t, http, NULL, &mh) != 0)
        return 1;
    if (memq_evbuffer_add(b, data, sizeof data) != 0)
        return 1;
    for (int i = 0; i < 10 && !memq_evbuffer_closed(b); i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    int ok = memq_evbuffer_closed(b) && memq_tracker_used(t) == 0;
    memq_evbuffer_free(b);
    memq_account_unref(a);
    memq_evhttp_free(mh);
    evhttp_free(http);
    memq_event_detach(ev);
    memq_tracker_free(t);
    event_base_free(base);
    printf("event: libmemquota-event %s, reclaimed in the loop: %s\n", memq_version_string(),
           ok ? "yes" : "no");
    return ok ? 0 : 1;
}
EOF2
    # shellcheck disable=SC2086
    if (cd "$src" && $CC -DVERSION="\"$version\"" event.c -o event $ev_cflags $ev_libs) \
           > "$tmp/event.log" 2>&1; then
        pass
        check "event: needs libmemquota-event.so.$major" \
            sh -c "readelf -d '$src/event' | grep -q 'NEEDED.*\[libmemquota-event.so.$major\]'"
        resolved=$(LD_LIBRARY_PATH=$p/lib ldd "$src/event" 2>&1 |
                   awk '/libmemquota-event/ { print $3 }')
        check "event: resolves libmemquota-event from the installed copy (got '$resolved')" \
            test "$resolved" = "$p/lib/libmemquota-event.so.$major"
        check "event: runs" env LD_LIBRARY_PATH="$p/lib" "$src/event"
    else
        cat "$tmp/event.log"
        fail "event: $CC event.c $ev_cflags $ev_libs"
    fi
    # shellcheck disable=SC2086
    if (cd "$src" && $CC -static -DVERSION="\"$version\"" event.c -o event-static $ev_cflags \
            $ev_static_libs) > "$tmp/event-static.log" 2>&1; then
        pass
        check "event-static: needs no shared libmemquota-event" \
            sh -c "! readelf -d '$src/event-static' 2>/dev/null | grep -q 'NEEDED.*libmemquota'"
        check "event-static: runs" env -u LD_LIBRARY_PATH "$src/event-static"
    else
        cat "$tmp/event-static.log"
        fail "event-static: $CC -static event.c $ev_cflags $ev_static_libs"
    fi
fi

# ---------------------------------------------------------------------------
# Uninstall
# ---------------------------------------------------------------------------
unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR
if $MAKE uninstall DESTDIR="$dest" PREFIX="$prefix" > "$tmp/uninstall.log" 2>&1; then
    pass
    list_files > "$tmp/left"
    left=$(comm -13 "$tmp/before" "$tmp/left" | tr '\n' ' ')
    removed=$(comm -23 "$tmp/before" "$tmp/left" | tr '\n' ' ')
    check "uninstall left installed files: $left" test -z "$left"
    check "uninstall removed files it did not install: $removed" test -z "$removed"
    changed=$(cd "$dest" && grep -rLx "not ours" . --include=other-package.sentinel | tr '\n' ' ')
    check "install or uninstall changed another package's files: $changed" test -z "$changed"
else
    cat "$tmp/uninstall.log"
    fail "make uninstall DESTDIR=$dest PREFIX=$prefix"
fi

echo "installed $(wc -l < "$tmp/installed") files under DESTDIR$prefix"
finish
