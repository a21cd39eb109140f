# coverage.awk - turn `gcov -b -n` output into one line per lib/ file and a
# total, and check the total against min ("LINES/BRANCHES", percent; empty:
# no check).  gcov prints, per object, a block per source file
#   File 'lib/x.c'
#   Lines executed:97.50% of 400
#   Branches executed:...% of N
#   Taken at least once:90.00% of 300
#   Calls executed:...
# then the object's own "Lines executed" summary, without a File line.  A
# header's inline functions appear once per object that uses them: their
# figures are summed.
/^File '/ {
    file = $0; sub(/^File '/, "", file); sub(/'$/, "", file);
    sub(/^.*\/lib\//, "lib/", file);
    if (file !~ /^lib\//)
        file = "";
    seen = 0;
    next;
}
/^Lines executed:/ {
    if (file == "" || seen) { file = ""; next; } # an object summary
    split($0, a, /[:% ]+/);
    ln[file] += a[5]; lh[file] += a[5] * a[3] / 100; seen = 1;
    if (!(file in order)) { order[file] = ++nfiles; name[nfiles] = file; }
    next;
}
/^Taken at least once:/ {
    if (file == "") next;
    split($0, a, /[:% ]+/);
    bn[file] += a[7]; bh[file] += a[7] * a[5] / 100;
    next;
}
END {
    for (i = 1; i <= nfiles; i++) {
        f = name[i];
        printf "  %-24s lines %6.2f%% of %5d   branches taken %6.2f%% of %5d\n", f,
               ln[f] ? 100 * lh[f] / ln[f] : 100, ln[f], bn[f] ? 100 * bh[f] / bn[f] : 100, bn[f];
        lines += ln[f]; lines_hit += lh[f]; branches += bn[f]; branches_hit += bh[f];
    }
    tl = lines ? 100 * lines_hit / lines : 0;
    tb = branches ? 100 * branches_hit / branches : 0;
    printf "coverage of lib/: lines %.2f%% of %d, branches taken %.2f%% of %d\n",
           tl, lines, tb, branches;
    if (min != "") {
        split(min, m, "/");
        if (tl < m[1] || tb < m[2]) {
            printf "coverage: below %s%% of lines / %s%% of branches\n", m[1], m[2];
            exit 1;
        }
    }
}
