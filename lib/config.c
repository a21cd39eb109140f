/*
 * config.c - configuration defaults, validation, size parsing and the
 * automatic high-water mark.
 */
#include "internal.h"
#include "pressure.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIB ((uint64_t)1024)
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)
#define TIB (GIB * 1024)

void memq_config_init(memq_config *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->max = MEMQ_AUTO;
    cfg->low_water = 0;
    cfg->cache_max = MEMQ_DEFAULT_CACHE_MAX;
    cfg->reclaim_mode = MEMQ_RECLAIM_MANUAL;
    cfg->reclaim_timeout_ms = 10000;
    cfg->reclaim_budget_us = 1000;
    cfg->pressure_interval_ms = 1000;
    cfg->pressure_stall_us = 200000;
    cfg->pressure_window_us = 2000000;
}

/* ======================================================================
 * Validation
 * ====================================================================== */

static int reject(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int reject(char *buf, size_t len, const char *fmt, ...)
{
    if (buf != NULL && len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return MEMQ_EINVAL;
}

/*
 * Check cfg and fill *out with MEMQ_AUTO resolved.  Every rule names the
 * field it concerns, so that a daemon can show the message to its operator
 * as it is.
 */
int memq__config_resolve(const memq_config *cfg, memq_config *out, char *buf, size_t len)
{
    if (buf != NULL && len > 0)
        buf[0] = '\0';
    if (cfg == NULL)
        return reject(buf, len, "config: NULL");
    memq_config c = *cfg;

    if (c.reclaim_mode != MEMQ_RECLAIM_MANUAL && c.reclaim_mode != MEMQ_RECLAIM_THREAD)
        return reject(buf, len, "reclaim_mode: must be MEMQ_RECLAIM_MANUAL or "
                                "MEMQ_RECLAIM_THREAD (got %d)", (int)c.reclaim_mode);
    if (c.reclaim_timeout_ms == 0)
        return reject(buf, len, "reclaim_timeout_ms: must be at least 1");
    if (c.reclaim_budget_us == 0)
        return reject(buf, len, "reclaim_budget_us: must be at least 1");
    if (c.pressure_interval_ms == 0)
        return reject(buf, len, "pressure_interval_ms: must be at least 1");
    /* The kernel's rules for a PSI trigger (kernel/sched/psi.c). */
    if (c.pressure_window_us < 500000 || c.pressure_window_us > 10000000)
        return reject(buf, len, "pressure_window_us: must be from 500000 to 10000000 (got %u)",
                      c.pressure_window_us);
    if (c.pressure_stall_us == 0 || c.pressure_stall_us > c.pressure_window_us)
        return reject(buf, len, "pressure_stall_us: must be from 1 to pressure_window_us (%u) "
                                "(got %u)", c.pressure_window_us, c.pressure_stall_us);

    if (c.max == MEMQ_UNLIMITED) {
        if (c.low_water != 0)
            return reject(buf, len, "low_water: must be 0 when max is MEMQ_UNLIMITED "
                                    "(got %zu)", c.low_water);
        if (c.pressure_low_water != 0)
            return reject(buf, len, "pressure_low_water: must be 0 when max is "
                                    "MEMQ_UNLIMITED (got %zu)", c.pressure_low_water);
        if (c.rss_max != 0)
            return reject(buf, len, "rss_max: needs a tracked max, not MEMQ_UNLIMITED");
        *out = c;
        return 0;
    }
    if (c.max == MEMQ_AUTO) {
        if (c.low_water != 0)
            return reject(buf, len, "low_water: an explicit low_water (%zu) needs an "
                                    "explicit max", c.low_water);
        c.max = memq_auto_max();
        if (c.max == 0)
            return reject(buf, len, "max: MEMQ_AUTO but the machine's memory size is "
                                    "unreadable; set max explicitly");
    }
    if (c.low_water == 0)
        c.low_water = c.max / 4 * 3 + (c.max % 4) * 3 / 4;
    if (c.low_water >= c.max)
        return reject(buf, len, "low_water: must be below max (low_water %zu, max %zu)",
                      c.low_water, c.max);
    if (c.cache_max > (SIZE_MAX / 4) || c.max - c.low_water < 4 * c.cache_max)
        return reject(buf, len, "cache_max: max - low_water (%zu) must be at least "
                                "4 * cache_max (%zu), or caches eat the hysteresis band",
                      c.max - c.low_water, c.cache_max <= SIZE_MAX / 4 ? 4 * c.cache_max : SIZE_MAX);
    if (c.pressure_low_water == 0)
        c.pressure_low_water = c.low_water / 2;
    if (c.pressure_low_water > c.low_water)
        return reject(buf, len, "pressure_low_water: must be at most low_water "
                                "(pressure_low_water %zu, low_water %zu)",
                      c.pressure_low_water, c.low_water);
    *out = c;
    return 0;
}

int memq_config_check(const memq_config *cfg, char *buf, size_t len)
{
    memq_config resolved;
    return memq__config_resolve(cfg, &resolved, buf, len);
}

/* ======================================================================
 * Sizes
 * ====================================================================== */

static uint64_t unit_of(const char *u, size_t n)
{
    static const struct {
        const char *name;
        uint64_t mult;
    } units[] = {
        {"b", 1},      {"k", KIB},    {"kb", KIB},   {"kib", KIB},  {"m", MIB},
        {"mb", MIB},   {"mib", MIB},  {"g", GIB},    {"gb", GIB},   {"gib", GIB},
        {"t", TIB},    {"tb", TIB},   {"tib", TIB},
    };
    if (n == 0)
        return 1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i].name) == n && strncasecmp(units[i].name, u, n) == 0)
            return units[i].mult;
    return 0;
}

/*
 * Exact integer arithmetic: value = whole * mult + fraction * mult / 10^k,
 * rounded down, with every step checked for overflow.  Fraction digits
 * beyond 19 cannot matter for units up to 2^40 and are ignored.
 */
int memq_parse_size(const char *text, size_t *out)
{
    if (text == NULL || out == NULL)
        return MEMQ_EINVAL;
    const char *s = text;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return MEMQ_EINVAL;

    uint64_t whole = 0;
    bool overflow = false;
    while (isdigit((unsigned char)*s)) {
        unsigned d = (unsigned)(*s++ - '0');
        if (whole > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            whole = whole * 10 + d;
    }
    uint64_t frac = 0, scale = 1;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s))
            return MEMQ_EINVAL;
        while (isdigit((unsigned char)*s)) {
            if (scale < UINT64_C(10000000000000000000)) {
                frac = frac * 10 + (unsigned)(*s - '0');
                scale *= 10;
            }
            s++;
        }
    }
    while (*s == ' ' || *s == '\t')
        s++;
    const char *unit = s;
    while (isalpha((unsigned char)*s))
        s++;
    size_t unit_len = (size_t)(s - unit);
    while (isspace((unsigned char)*s))
        s++;
    if (*s != '\0')
        return MEMQ_EINVAL;
    uint64_t mult = unit_of(unit, unit_len);
    if (mult == 0)
        return MEMQ_EINVAL;
    if (overflow || whole > UINT64_MAX / mult)
        return MEMQ_EOVERFLOW;
    uint64_t value = whole * mult;
    /* frac < scale <= 10^19 and mult <= 2^40: split to stay in 64 bits. */
    uint64_t part = (frac / scale) * mult
                  + (uint64_t)(((unsigned __int128)(frac % scale) * mult) / scale);
    if (value > UINT64_MAX - part)
        return MEMQ_EOVERFLOW;
    value += part;
    if (value > SIZE_MAX)
        return MEMQ_EOVERFLOW;
    *out = (size_t)value;
    return 0;
}

/* ======================================================================
 * The automatic high-water mark
 * ====================================================================== */

/*
 * 75% of the first 8 GiB of memory, 40% of the rest, at most 8 GiB.  The
 * two slopes meet at 8 GiB, so unlike Arti's and C Tor's step the result
 * never drops as memory grows; it reaches the cap at 13 GiB.
 */
size_t memq__auto_max_from(uint64_t limit)
{
    uint64_t q;
    if (limit <= 8 * GIB)
        q = limit / 4 * 3 + (limit % 4) * 3 / 4;
    else
        q = 6 * GIB + (limit - 8 * GIB) / 5 * 2 + (limit - 8 * GIB) % 5 * 2 / 5;
    if (q > 8 * GIB)
        q = 8 * GIB;
    return q > SIZE_MAX ? SIZE_MAX : (size_t)q;
}

/* MemTotal and the cgroup limit are read by the pressure room's readers
 * (lib/pressure.c), the one place that finds the process's cgroups. */
size_t memq__auto_max_at(const char *root)
{
    uint64_t total = memq__machine_ram(root);
    uint64_t cg = memq__machine_cgroup_max(root);
    uint64_t limit = total != 0 && total < cg ? total : cg;
    if (limit == 0 || limit == UINT64_MAX)
        return 0;
    return memq__auto_max_from(limit);
}

size_t memq_auto_max(void)
{
    return memq__auto_max_at("");
}
