#!/bin/sh
# check_manpages.sh - every exported symbol has a man page, and every man
# page renders cleanly.
#
#   tests/check_manpages.sh [LIBRARY [MANDIR]]
#
# LIBRARY defaults to lib/libmemquota.so and MANDIR to doc/man.  If
# libmemquota-event.so (the libevent integration) sits beside LIBRARY, its
# symbols are checked too.  Checks:
#  1. every symbol that `nm -D --defined-only LIBRARY` lists has a page
#     MANDIR/<symbol>.3, and the page it leads to (itself, or the target of
#     its `.so man3/<page>.3` line) names the symbol in its NAME section;
#     and every such symbol is named memq_*;
#  2. a link page is exactly one `.so man3/<page>.3` line whose target
#     exists and is not itself a link;
#  3. a main page's .TH title is its file name in upper case, section 3;
#  4. every page renders with `groff -man -ww -z` (and with -Tutf8, as
#     man(1) shows it) without a single warning or error.
# Prints one line per problem and a closing "N passed, N failed" line;
# exits 1 if anything failed, 2 if a tool or the library is missing.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
lib=${1:-$root/lib/libmemquota.so}
mandir=${2:-$root/doc/man}

for tool in nm groff; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "check_manpages: $tool not found (apt-get install binutils groff-base)" >&2
        exit 2
    fi
done
if [ ! -f "$lib" ]; then
    echo "check_manpages: no library at $lib (run make first)" >&2
    exit 2
fi
if [ ! -d "$mandir" ]; then
    echo "check_manpages: no man page directory $mandir" >&2
    exit 2
fi
mandir=$(cd "$mandir" && pwd)

# The `.so man3/x.3` lines resolve against the current directory, as they
# do under an installed man/ directory: render from a directory whose man3
# is MANDIR.
work=$(mktemp -d "${TMPDIR:-/tmp}/check_manpages.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT INT TERM
ln -s "$mandir" "$work/man3"

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }

# The target of a link page (its one .so line), or nothing for a main page.
link_target() {
    sed -n 's|^\.so[ 	]*man3/\([^ 	]*\)[ 	]*$|\1|p' "$1"
}

# The NAME section's text, up to its "\-".
name_section() {
    awk '/^\.SH[ \t]+"?NAME"?[ \t]*$/ { on = 1; next }
         /^\.SH/ { on = 0 }
         on { print }' "$1" | sed 's/\\-.*//'
}

# 1. Every exported symbol has a page that names it.
libs=$lib
event_lib=$(dirname "$lib")/libmemquota-event.so
if [ -f "$event_lib" ]; then
    libs="$libs $event_lib"
fi
symbols=""
for l in $libs; do
    these=$(nm -D --defined-only "$l" | awk 'NF >= 3 { sub(/@.*/, "", $3); print $3 }' | sort -u)
    if [ -z "$these" ]; then
        fail "$l exports no symbols"
    fi
    for sym in $these; do
        case $sym in
        _init|_fini|_edata|_end|__bss_start|memq_*) ;;
        *) fail "$(basename "$l") exports $sym, which is not named memq_*" ;;
        esac
    done
    symbols="$symbols $these"
done
for sym in $symbols; do
    case $sym in
    _init|_fini|_edata|_end|__bss_start) continue ;; # the linker's own
    esac
    page=$mandir/$sym.3
    if [ ! -f "$page" ]; then
        fail "$sym: no page $page"
        continue
    fi
    main=$page
    target=$(link_target "$page")
    if [ -n "$target" ]; then
        main=$mandir/$target
        if [ ! -f "$main" ]; then
            fail "$sym: $sym.3 links to missing man3/$target"
            continue
        fi
    fi
    if name_section "$main" | grep -qw -- "$sym"; then
        pass
    else
        fail "$sym: the NAME section of $(basename "$main") does not name it"
    fi
done

# 2-4. Every page.
pages=0
for page in "$mandir"/*.3; do
    [ -f "$page" ] || continue
    pages=$((pages + 1))
    base=$(basename "$page")
    target=$(link_target "$page")
    if [ -n "$target" ]; then
        lines=$(grep -cv '^[ 	]*$' "$page")
        if [ "$lines" != 1 ]; then
            fail "$base: a link page must hold only its .so line"
        elif [ ! -f "$mandir/$target" ]; then
            fail "$base: links to missing man3/$target"
        elif [ -n "$(link_target "$mandir/$target")" ]; then
            fail "$base: links to man3/$target, which is itself a link"
        else
            pass
        fi
    elif grep -q '^\.so' "$page"; then
        fail "$base: a .so line must be the whole page, as .so man3/<page>.3"
    else
        want=$(basename "$page" .3 | tr '[:lower:]' '[:upper:]')
        th=$(awk '/^\.TH/ { print $2, $3; exit }' "$page")
        if [ "$th" = "$want 3" ]; then
            pass
        else
            fail "$base: .TH is \"$th\", want \"$want 3\""
        fi
    fi
    for device in "" -Tutf8; do
        out=$(cd "$work" && groff -man -ww -z $device "man3/$base" 2>&1)
        rc=$?
        if [ $rc -ne 0 ] || [ -n "$out" ]; then
            fail "$base: groff -man -ww -z${device:+ $device} (exit $rc): $out"
        else
            pass
        fi
    done
done
if [ "$pages" = 0 ]; then
    fail "no pages in $mandir"
fi

echo "man pages: $passed passed, $failed failed"
[ "$failed" = 0 ]
